"""hana_server: an Ollama-compatible model server for the notebook machine (server side of hana)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The Jupyter server extension (`jpserver_extensions: {"hana_server": true}`)."""
    # Imported here: runners and `hana` CLI import this package and need no Jupyter server.
    from hana_server.extension import HanaApp

    return [{"module": "hana_server", "app": HanaApp}]
