"""Real upstreams on loopback for the remote-model tests: a second `hana serve` (Ollama-native,
with an API key) and `python -m llama_cpp.server` (OpenAI-compatible, with an API key), both on
tiny GGUFs; and the local `hana serve` whose remote models point at them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from remote_harness import OPENAI_KEY, UPSTREAM_KEY, LlamaCppServer
from server_harness import HanaServerProcess
from tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HanaServerProcess]:
    """The Ollama-native upstream: `tiny` (completion) and `tiny-embed` (embedding); every
    request needs `Bearer upstream-secret`."""
    root = tmp_path_factory.mktemp("upstream")
    proc = HanaServerProcess(
        root / "models", root / "server.log", HANA_API_KEY=UPSTREAM_KEY, HANA_NUM_PARALLEL="4"
    ).start()
    proc.create_tiny("tiny", root, seed=3)
    embed = write_tiny_gguf(root / "tiny-embed.gguf", seed=4, pooling_type=1)
    proc.create_model("tiny-embed", embed)
    for name in ("tiny", "tiny-embed"):  # loaded now: the tests' time limits are for answers
        proc.http.post("/api/generate", json={"model": name, "keep_alive": -1, "stream": False})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def openai_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    root = tmp_path_factory.mktemp("openai-upstream")
    model = write_tiny_gguf(root / "tiny.gguf", seed=5)
    server = LlamaCppServer(model, root / "llama_cpp.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers: the
    one upstream behaviour ("slow") that the real servers cannot be made to show on demand."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HanaServerProcess]:
    """The hana the tests talk to: remote models allowed from 127.0.0.1 only, one request per
    upstream at a time, one waiting, an 8 s silence limit; keys in named variables."""
    root = tmp_path_factory.mktemp("local")
    env: dict[str, Any] = {
        "HANA_REMOTES": "127.0.0.1",
        "HANA_REMOTE_PARALLEL": "1",
        "HANA_MAX_QUEUE": "1",
        "HANA_REMOTE_TIMEOUT": "8",
        "UPSTREAM_API_KEY": UPSTREAM_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        "WRONG_API_KEY": "not-the-key",
    }
    env.pop("OLLAMA_REMOTES", None)
    os.environ.pop("HANA_REMOTES", None)
    proc = HanaServerProcess(root / "models", root / "server.log", **env).start()
    yield proc
    proc.stop()
