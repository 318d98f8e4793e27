"""hana-jupyter, kernel side: `%load_ext hana_jupyter` for the `%hana` / `%%hana` magics.

Also importable from code: `HanaClient` (the Ollama API, async-first with sync twins; it lives in
the `hana_client` package shared with the `hana` CLI),
`ModelManager` (list, warm up, keep alive, unload, run prompts in parallel) and `panel()` (a live
widget panel of the server's models). Names are imported on first use, so `%load_ext` and
`import hana_jupyter` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from hana_client import Answer, HanaClient
    from hana_jupyter.magics import HanaMagics
    from hana_jupyter.manager import ModelManager
    from hana_jupyter.runner_panel import HanaPanel, panel
    from hana_protocol.errors import HanaError, ModelNotFound, ServerUnreachable

_LAZY = {
    "Answer": "hana_client",
    "HanaClient": "hana_client",
    "HanaError": "hana_protocol.errors",
    "ModelNotFound": "hana_protocol.errors",
    "ServerUnreachable": "hana_protocol.errors",
    "HanaMagics": "hana_jupyter.magics",
    "ModelManager": "hana_jupyter.manager",
    "HanaPanel": "hana_jupyter.runner_panel",
    "panel": "hana_jupyter.runner_panel",
}

__all__ = [
    "Answer",
    "HanaClient",
    "HanaError",
    "HanaMagics",
    "HanaPanel",
    "ModelManager",
    "ModelNotFound",
    "ServerUnreachable",
    "load_ipython_extension",
    "panel",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hana_jupyter' has no attribute {name!r}")


def load_ipython_extension(ip: InteractiveShell) -> None:
    """Register `%hana` / `%%hana` (called by `%load_ext hana_jupyter`)."""
    from hana_jupyter.magics import HanaMagics

    ip.register_magics(HanaMagics)


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """Remove the magics (`%unload_ext hana_jupyter`); a running embedded server keeps serving
    other clients in this kernel until it exits."""
    for kind in ("line", "cell"):
        ip.magics_manager.magics[kind].pop("hana", None)
    magics = ip.magics_manager.registry.pop("HanaMagics", None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)
