"""Reading manifests: Ollama's own layout, names in any letter case, order, damaged models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore
from store_files import sha256


def test_hand_written_ollama_store_is_readable(tmp_path: Path, tiny_gguf_path: Path) -> None:
    """A store laid out by Ollama itself: its config has no capabilities or context length."""
    root = tmp_path / "ollama-models"
    (root / "blobs").mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        digest = sha256(data)
        (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def layer(kind: str, data: bytes) -> dict[str, object]:
        return {"mediaType": f"application/vnd.ollama.image.{kind}", **blob(data)}

    config = {
        "model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
        "model_type": "116K", "file_type": "F32", "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            **blob(json.dumps(config).encode()),
        },
        "layers": [
            layer("model", tiny_gguf_path.read_bytes()),
            layer("template", b"{{ .Prompt }}"),
            layer("license", b"LICENSE TEXT"),
            layer("params", b'{"stop":["</s>"],"num_ctx":2048}'),
        ],
    }
    for host_path in ("registry.ollama.ai/library/handmade/7b", "example.com/user/other/q4"):
        path = root / "manifests" / host_path
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(manifest))
    # Not a manifest: wrong depth, and an invalid tag name.
    (root / "manifests/registry.ollama.ai/library/handmade/.tmp-123").write_text("{}")

    store = ModelStore(root)
    assert sorted(m.name.display for m in store.list()) == [
        "example.com/user/other:q4",
        "handmade:7b",
    ]
    model = store.get("HANDMADE:7B")
    assert model.template == "{{ .Prompt }}"
    assert model.parameters == {"stop": ["</s>"], "num_ctx": 2048}
    assert model.license == ["LICENSE TEXT"]
    assert model.system is None
    assert model.details()["quantization_level"] == "F32"
    assert "context_length" not in model.details()
    assert model.capabilities == ["completion"]  # derived from the GGUF, as Ollama does
    assert model.model_path.read_bytes() == tiny_gguf_path.read_bytes()

    # and a model derived from it gets a complete config
    derived = store.create("derived", from_model="handmade:7b", system="hi")
    assert derived.config["context_length"] == 4096
    assert derived.capabilities == ["completion"]
    assert derived.details()["parent_model"] == "handmade:7b"


def test_get_is_case_insensitive_and_keeps_the_stored_spelling(
    store: ModelStore, model_dir: Path
) -> None:
    store.create_from_modelfile("MyModel:Tag1", "FROM tiny.gguf", model_dir)
    assert store.get("mymodel:TAG1").name.display == "MyModel:Tag1"
    assert store.get("registry.ollama.ai/LIBRARY/MYMODEL:tag1").name.display == "MyModel:Tag1"
    # creating under another spelling replaces the model instead of adding a twin
    store.create_from_modelfile("MYMODEL:tag1", "FROM tiny.gguf\nSYSTEM x", model_dir)
    assert [m.name.display for m in store.list()] == ["MyModel:Tag1"]
    assert store.get("mymodel:tag1").system == "x"


def test_list_is_newest_first(store: ModelStore, model_dir: Path) -> None:
    for i, name in enumerate(["old", "newest", "middle"]):
        store.create_from_modelfile(name, f"FROM tiny.gguf\nSYSTEM {i}", model_dir)
    stamps = {"old": 1_000_000, "middle": 2_000_000, "newest": 3_000_000}
    for name, stamp in stamps.items():
        os.utime(store.root / f"manifests/registry.ollama.ai/library/{name}/latest", (stamp, stamp))
    assert [m.name.model for m in store.list()] == ["newest", "middle", "old"]
    assert store.list()[0].modified_at.timestamp() == 3_000_000
    assert store.list()[0].modified_at.tzinfo is not None


def test_damaged_model_is_left_out_of_the_list(store: ModelStore, model_dir: Path) -> None:
    store.create_from_modelfile("good", "FROM tiny.gguf", model_dir)
    bad = store.create_from_modelfile("bad", "FROM tiny.gguf\nSYSTEM gone", model_dir)
    store.blob_path(sha256(b"gone")).unlink()
    assert [m.name.display for m in store.list()] == ["good:latest"]
    with pytest.raises(Exception, match="damaged"):
        store.get("bad")
    assert bad.model_path.exists()
