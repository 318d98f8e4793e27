"""The start-up prune: blobs no manifest refers to, temp files of dead writers, empty manifest
directories; `HANA_NOPRUNE` / `OLLAMA_NOPRUNE` turn it off, and nothing young is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.store.store import ModelStore
from store_files import blob_files

HOUR_AGO = time.time() - 2 * 3600


def age(path: Path) -> Path:
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


def fill(store: ModelStore, model_dir: Path) -> dict[str, Path]:
    """A model (its blobs aged), an old orphan blob, a young orphan, an old and a young temp file,
    and an empty manifest directory."""
    store.create_from_modelfile("kept", "FROM ./tiny.gguf\nSYSTEM hi\n", model_dir)
    for path in store.blobs_dir.iterdir():
        age(path)
    old_orphan, _ = store.blobs.write_bytes(b"nobody uses me")
    young_orphan, _ = store.blobs.write_bytes(b"uploaded for a create to come")
    files = {
        "old_orphan": age(store.blob_path(old_orphan)),
        "young_orphan": store.blob_path(young_orphan),
        "old_temp": store.blobs_dir / ".tmp-dead-writer",
        "young_temp": store.blobs_dir / ".tmp-live-writer",
    }
    files["old_temp"].write_bytes(b"half")
    age(files["old_temp"])
    files["young_temp"].write_bytes(b"half")
    empty = store.manifests_dir / "registry.ollama.ai" / "gone" / "model"
    empty.mkdir(parents=True)
    files["empty_dir"] = empty
    return files


def test_prune_removes_only_old_unreferenced_files(store: ModelStore, model_dir: Path) -> None:
    files = fill(store, model_dir)
    before = blob_files(store.blobs_dir)
    assert store.prune() == 2  # the old orphan and the old temp file
    after = blob_files(store.blobs_dir)
    assert before - after == {files["old_orphan"].name, files["old_temp"].name}
    assert not files["empty_dir"].exists() and not files["empty_dir"].parent.exists()
    model = store.get("kept")  # the model still reads whole: every layer kept
    assert model.model_path.exists() and model.system == "hi"


def test_an_unreadable_manifest_stops_the_prune(store: ModelStore, model_dir: Path) -> None:
    files = fill(store, model_dir)
    broken = store.manifests_dir / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert store.prune() == 0  # its blobs would look unused: remove nothing
    assert files["old_orphan"].exists()


@pytest.mark.parametrize("variable", ["HANA_NOPRUNE", "OLLAMA_NOPRUNE"])
async def test_the_service_prunes_at_start_unless_noprune(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    def started(name: str) -> tuple[dict[str, Path], HanaService]:
        settings = HanaSettings(models_dir=str(tmp_path / name), register_default_model=False)
        files = fill(ModelStore(Path(settings.models_dir)), model_dir)
        return files, HanaService(settings)

    files, service = started("pruned")
    await service.start()
    await service.stop()
    assert not files["old_orphan"].exists() and files["young_orphan"].exists()

    monkeypatch.setenv(variable, "1")
    files, service = started("kept")
    await service.start()
    await service.stop()
    assert files["old_orphan"].exists() and files["old_temp"].exists()
