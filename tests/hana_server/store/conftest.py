"""Store fixtures: an empty store in a temp dir, and a folder holding a tiny GGUF."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def model_dir(tmp_path: Path, tiny_gguf_path: Path) -> Path:
    """A folder with tiny.gguf next to where a Modelfile would be."""
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(tiny_gguf_path, folder / "tiny.gguf")
    return folder
