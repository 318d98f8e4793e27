"""The panel counts `auto` requests per tier, and lists `auto` as a status line, not a row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import HanaServerProcess, wait_for

from hana_client import HanaClient
from hana_jupyter.runner_panel import HanaPanel, routing_summary


@pytest.fixture
def routed_server(tmp_path: Path) -> Iterator[HanaServerProcess]:
    proc = HanaServerProcess(
        tmp_path / "models", tmp_path / "server.log", HANA_ROUTES="simple=small,complex=big"
    ).start()
    proc.create_tiny("small", tmp_path, seed=1)
    proc.create_tiny("big", tmp_path, seed=2)
    yield proc
    proc.stop()


def test_panel_counts_requests_per_tier(routed_server: HanaServerProcess) -> None:
    def ask(prompt: str) -> None:
        body = {"model": "auto", "prompt": prompt, "stream": False, "options": {"num_predict": 2}}
        assert routed_server.http.post("/api/generate", json=body).status_code == 200

    ask("What is the capital of Peru?")  # before the panel: read from /api/hana/status
    client = HanaClient(url=routed_server.url)
    panel = HanaPanel(client, throttle=0.02)
    try:
        wait_for(lambda: "auto: simple 1, complex 0" in panel.status, 15)
        assert set(panel.rows) == {"small:latest", "big:latest"}  # no row for auto
        ask("Prove that there are infinitely many primes, step by step.")  # a `route` event
        wait_for(lambda: "auto: simple 1, complex 1" in panel.status, 15)
    finally:
        panel.close()
        client.close()


def test_routing_summary_reads_the_servers_counts() -> None:
    assert routing_summary({}) == ""
    assert routing_summary({"name": "auto", "routes": {}, "requests": {}, "failed": 0}) == ""
    counts = {
        "name": "auto",
        "routes": {"simple": "a", "complex": "b"},
        "requests": {"complex": 2, "medium": 1},
        "fallbacks": 1,
        "failed": 2,
    }
    assert routing_summary(counts) == "auto: simple 0, complex 2, medium 1, 1 fell back, 2 failed"
