"""The client library and the kernel side talk to the server over HTTP only: they never import
it (nor the store, which drags in gguf and numpy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("hana_server", "numpy", "gguf", "llama_cpp")


@pytest.mark.parametrize(
    ("modules", "also_forbidden"),
    [
        (["hana_client", "hana_client.discovery"], ("IPython", "hana_jupyter", "ipywidgets")),
        (["hana_jupyter.magics", "hana_jupyter.manager", "hana_jupyter.runner_panel"], ()),
    ],
)
def test_never_imports_the_server(modules: list[str], also_forbidden: tuple[str, ...]) -> None:
    forbidden = FORBIDDEN + also_forbidden
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
