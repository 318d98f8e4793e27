"""The store as a whole: get, copy and delete (with the blob sweep), the default directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore
from store_files import MODELFILE, blob_files, sha256

from hana_protocol.env import default_models_dir
from hana_protocol.errors import ModelNotFound


def test_get_unknown_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound) as info:
        store.get("nope")
    assert info.value.status == 404
    assert info.value.message == "model 'nope' not found"


def test_copy_then_delete_keeps_shared_blobs(store: ModelStore, model_dir: Path) -> None:
    original = store.create_from_modelfile("a", MODELFILE, model_dir)
    all_blobs = blob_files(store.blobs_dir)
    copied = store.copy("a", "user/b:v2")
    assert copied.name.display == "user/b:v2"
    assert copied.digest == original.digest
    assert {m.name.display for m in store.list()} == {"a:latest", "user/b:v2"}

    store.delete("A")
    assert [m.name.display for m in store.list()] == ["user/b:v2"]
    assert blob_files(store.blobs_dir) == all_blobs  # b still uses every blob
    assert not (store.root / "manifests/registry.ollama.ai/library").exists()

    store.delete("user/b:v2")
    assert blob_files(store.blobs_dir) == set()
    assert store.list() == []
    with pytest.raises(ModelNotFound):
        store.delete("user/b:v2")


def test_delete_removes_only_unshared_blobs(store: ModelStore, model_dir: Path) -> None:
    one = store.create_from_modelfile("one", "FROM tiny.gguf\nSYSTEM only in one", model_dir)
    two = store.create_from_modelfile("two", "FROM tiny.gguf\nSYSTEM only in two", model_dir)
    store.delete("one")
    assert two.model_path.exists()
    system_one = sha256(b"only in one").replace(":", "-")
    system_two = sha256(b"only in two").replace(":", "-")
    assert system_one not in blob_files(store.blobs_dir)
    assert system_two in blob_files(store.blobs_dir)
    assert one.model_path == two.model_path
    assert store.get("two").system == "only in two"


def test_delete_keeps_blobs_an_unreadable_manifest_or_a_running_pull_may_name(
    store: ModelStore, model_dir: Path
) -> None:
    one = store.create_from_modelfile("one", "FROM tiny.gguf\nSYSTEM only in one", model_dir)
    other = store.manifests_dir / "registry.ollama.ai/library/broken/latest"
    other.parent.mkdir(parents=True)
    other.write_text("{not json")  # e.g. written by a newer Ollama, or half-copied by hand
    store.delete("one")
    assert one.model_path.exists()  # it might be one the broken manifest names
    other.unlink()

    two = store.create_from_modelfile("two", "FROM tiny.gguf", model_dir)
    store.pin([f"sha256:{two.model_path.name[7:]}"])  # a pull will name this blob
    store.delete("two")
    assert two.model_path.exists()
    store.unpin([f"sha256:{two.model_path.name[7:]}"])


def test_copy_unknown_source(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'ghost' not found"):
        store.copy("ghost", "other")


def test_default_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HANA_MODELS", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".hana" / "models"
    ollama = tmp_path / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    assert default_models_dir() == tmp_path / ".hana" / "models"  # no models: not Ollama's store
    (ollama / "manifests").mkdir()
    assert default_models_dir() == ollama  # the models Ollama pulled, shared as they are
    (ollama / "blobs").chmod(0o555)
    if not os.access(ollama / "blobs", os.W_OK):  # root may write anyway
        assert default_models_dir() == tmp_path / ".hana" / "models"
    (ollama / "blobs").chmod(0o755)
    monkeypatch.setenv("OLLAMA_MODELS", "/srv/ollama")
    assert default_models_dir() == Path("/srv/ollama")
    monkeypatch.setenv("HANA_MODELS", "~/hana")
    assert default_models_dir() == tmp_path / "hana"
