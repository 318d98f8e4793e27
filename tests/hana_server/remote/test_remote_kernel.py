"""A remote model from the notebook: `%%hana local remote` runs both at once, and the panel shows
the remote one without warm-up/unload controls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from remote_harness import create_remote
from server_harness import HanaServerProcess, wait_for
from traitlets.config import Config

from hana_client import HanaClient
from hana_jupyter.runner_panel import HanaPanel


@pytest.fixture(scope="module")
def models(
    upstream: HanaServerProcess, local: HanaServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """`near` runs on the local server, `far` on the upstream."""
    local.create_tiny("near", tmp_path_factory.mktemp("near"), seed=7)
    created = create_remote(
        local,
        "far",
        **{"from": "tiny"},
        remote_host=upstream.url,
        remote_key_env="UPSTREAM_API_KEY",
    )
    assert created.status_code == 200
    return "near:latest", "far:latest"


@pytest.fixture
def shell(local: HanaServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("HANA_URL", local.url)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.display_pub = CapturingDisplayPublisher(shell=ip)
    ip.run_line_magic("load_ext", "hana_jupyter")
    ip.run_line_magic("config", "HanaMagics.throttle = 0.02")
    yield ip
    magics = ip.magics_manager.registry["HanaMagics"]
    if magics._manager is not None:
        magics._manager.client.close()
    ip.run_line_magic("unload_ext", "hana_jupyter")
    InteractiveShell.clear_instance()


def test_local_and_remote_models_run_at_once(
    shell: InteractiveShell, models: tuple[str, str]
) -> None:
    near, far = models
    shell.run_line_magic("hana", f"warmup {near}")
    shell.run_cell_magic("hana", f"{near} {far} -n 300 -t 0 -o answers", "Tell me a story.")
    answers = shell.user_ns["answers"]
    assert isinstance(answers, list) and len(answers) == 2 and all(answers)
    streams = shell.magics_manager.registry["HanaMagics"].last_streams
    assert [s.completion.eval_count for s in streams] == [300, 300]
    first, second = streams
    # Both were producing at the same time (one after the other, the intervals would not meet).
    assert first.first_chunk < second.finished and second.first_chunk < first.finished


def test_panel_shows_remote_without_runner_controls(
    local: HanaServerProcess, models: tuple[str, str], tmp_path: Path
) -> None:
    near, far = models
    client = HanaClient(url=local.url)
    panel = HanaPanel(client, throttle=0.02)
    try:
        wait_for(lambda: panel.connected and far in panel.rows and near in panel.rows)
        row = panel.rows[far]
        wait_for(lambda: row.state == "remote")
        assert row.remote_host.startswith("http://127.0.0.1:")
        assert row.warm_button.layout.display == "none"
        assert row.unload_button.layout.display == "none"
        assert row.keep_alive_chooser.layout.display == "none"
        assert row.runner_label.value == f"→ {row.remote_host}"
        assert panel.rows[near].warm_button.layout.display == ""
        # While a request runs upstream, the row counts it.
        done = threading.Event()

        def ask() -> None:
            local.http.post(
                "/api/generate",
                json={
                    "model": far,
                    "prompt": "go",
                    "stream": False,
                    "options": {"num_predict": 2000},
                },
            )
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        wait_for(lambda: row.in_flight == 1)  # 2000 tokens take seconds upstream
        wait_for(lambda: "remote 1/1" in row.badge.value)
        wait_for(done.is_set, timeout=60)
    finally:
        panel.close()
        client.close()
