"""Kernel-side fixtures: the bundled model in the session's server, and a bare IPython shell whose
display calls are recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from server_harness import HanaServerProcess
from traitlets.config import Config


@pytest.fixture(scope="session")
def gemma(hana: HanaServerProcess, gemma_gguf_path: Path) -> str:
    """The bundled gemma3:270m, registered in the session's server."""
    hana.create_model("gemma3:270m", gemma_gguf_path)
    return "gemma3:270m"


class RecordingPublisher(CapturingDisplayPublisher):
    """Keeps every display call with its display id, update flag and time."""

    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self.outputs.append(
            {
                "data": data,
                "display_id": (transient or {}).get("display_id"),
                "update": update,
                "time": time.monotonic(),
            }
        )

    def by_id(self) -> dict[str, list[dict[str, Any]]]:
        """Outputs grouped by display id, in the order the ids first appeared."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for output in self.outputs:
            grouped.setdefault(output["display_id"], []).append(output)
        return grouped


@pytest.fixture
def shell(hana: HanaServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """A bare InteractiveShell with `%load_ext hana_jupyter` done, talking to the test server."""
    monkeypatch.setenv("HANA_URL", hana.url)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.display_pub = RecordingPublisher(shell=ip)
    ip.run_line_magic("load_ext", "hana_jupyter")
    ip.run_line_magic("config", "HanaMagics.throttle = 0.02")
    yield ip
    magics = ip.magics_manager.registry["HanaMagics"]
    if magics._manager is not None:
        magics._manager.client.close()
    ip.run_line_magic("unload_ext", "hana_jupyter")
    InteractiveShell.clear_instance()
