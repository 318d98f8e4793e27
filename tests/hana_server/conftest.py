"""Server-side fixtures: real `hana serve` processes with tiny models in a private store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_harness import HanaServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HanaServerProcess]:
    """One server per test module with models `tiny`, `tiny2` and `tiny3` (different seeds)."""
    root = tmp_path_factory.mktemp("hana")
    proc = HanaServerProcess(root / "models", root / "server.log").start()
    for seed, name in enumerate(("tiny", "tiny2", "tiny3")):
        proc.create_tiny(name, root, seed=seed)
    yield proc
    proc.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., HanaServerProcess]]:
    """Start a server with extra env vars (e.g. HANA_MAX_LOADED_MODELS); stopped after the test."""
    started: list[HanaServerProcess] = []

    def start(models: tuple[str, ...] = ("tiny",), **env: str) -> HanaServerProcess:
        proc = HanaServerProcess(tmp_path / "models", tmp_path / "server.log", **env).start()
        started.append(proc)
        for seed, name in enumerate(models):
            proc.create_tiny(name, tmp_path, seed=seed)
        return proc

    yield start
    for proc in started:
        proc.stop()
