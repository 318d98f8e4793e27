"""The model store on real files: Ollama's layout, create/get/list/copy/delete, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore
from tiny_gguf import write_tiny_gguf

from hana_protocol.env import default_models_dir
from hana_protocol.errors import InvalidRequest, ModelNotFound

TEMPLATE = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}"
MODELFILE = f'''\
FROM ./tiny.gguf
TEMPLATE """{TEMPLATE}"""
SYSTEM You are terse.
PARAMETER temperature 0.2
PARAMETER stop </s>
PARAMETER stop <|end|>
MESSAGE user Hi
MESSAGE assistant Hello!
LICENSE MIT
'''


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blobs(store: ModelStore) -> set[str]:
    """Every file in blobs/, temp files included."""
    return {p.name for p in store.blobs_dir.iterdir()} if store.blobs_dir.exists() else set()


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


def test_create_from_modelfile_writes_ollama_layout(store: ModelStore, model_dir: Path) -> None:
    statuses: list[str] = []
    model = store.create_from_modelfile("tiny", MODELFILE, model_dir, statuses.append)

    gguf_bytes = (model_dir / "tiny.gguf").read_bytes()
    gguf_digest = sha256(gguf_bytes)
    assert model.name.display == "tiny:latest"
    assert model.model_path == store.blobs_dir / gguf_digest.replace(":", "-")
    assert model.model_path.read_bytes() == gguf_bytes
    assert model.template == TEMPLATE
    assert model.system == "You are terse."
    assert model.parameters == {"temperature": 0.2, "stop": ["</s>", "<|end|>"]}
    assert model.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert model.license == ["MIT"]
    assert model.details() == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "116K",
        "quantization_level": "F32",
        "context_length": 4096,
        "embedding_length": 64,
    }
    assert model.capabilities == ["completion"]

    manifest_path = store.root / "manifests/registry.ollama.ai/library/tiny/latest"
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    assert model.digest == hashlib.sha256(raw).hexdigest()
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    media = [layer["mediaType"].rsplit(".", 1)[1] for layer in manifest["layers"]]
    assert media == ["model", "template", "system", "params", "messages", "license"]
    for layer in [manifest["config"], *manifest["layers"]]:
        blob = store.blob_path(layer["digest"]).read_bytes()
        assert (sha256(blob), len(blob)) == (layer["digest"], layer["size"])
    assert model.size == sum(la["size"] for la in [manifest["config"], *manifest["layers"]])
    config = json.loads(store.blob_path(manifest["config"]["digest"]).read_bytes())
    assert config["model_format"] == "gguf"
    assert config["model_type"] == "116K"
    assert config["rootfs"]["diff_ids"] == [la["digest"] for la in manifest["layers"]]

    assert statuses[:2] == ["gathering model components", "copying file tiny.gguf"]
    assert "parsing GGUF" in statuses
    assert f"using existing layer {gguf_digest}" in statuses
    assert f"creating new layer {manifest['config']['digest']}" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    assert not any(name.startswith(".tmp") for name in blobs(store))


def test_second_create_from_same_file_reuses_the_blob(store: ModelStore, model_dir: Path) -> None:
    first = store.create_from_modelfile("a", "FROM tiny.gguf\n", model_dir)
    before = blobs(store)
    statuses: list[str] = []
    second = store.create_from_modelfile(
        "b", "FROM tiny.gguf\nSYSTEM hi\n", model_dir, statuses.append
    )
    assert second.model_path == first.model_path
    assert not any(s.startswith("copying file") for s in statuses)
    assert len(blobs(store) - before) == 2  # the system layer and the new config
    assert sum(1 for s in statuses if s.startswith("creating new layer")) == 2


def test_template_with_tools_adds_the_capability(store: ModelStore, model_dir: Path) -> None:
    text = 'FROM tiny.gguf\nTEMPLATE """{{ if .Tools }}tools{{ end }}{{ .Prompt }}"""\n'
    assert store.create_from_modelfile("t", text, model_dir).capabilities == ["completion", "tools"]


def test_gguf_chat_template_with_tools_counts_without_a_go_template(
    store: ModelStore, tmp_path: Path
) -> None:
    jinja = "{% if tools %}{{ tools | tojson }}{% endif %}{{ messages[-1].content }}"
    write_tiny_gguf(tmp_path / "j.gguf", chat_template=jinja)
    model = store.create_from_modelfile("j", "FROM j.gguf", tmp_path)
    assert model.template is None
    assert model.capabilities == ["completion", "tools"]


def test_create_from_existing_model_inherits_and_overrides(
    store: ModelStore, model_dir: Path
) -> None:
    base = store.create_from_modelfile("base:v1", MODELFILE, model_dir)
    text = "FROM base:v1\nSYSTEM You are verbose.\nPARAMETER temperature 0.9\nPARAMETER top_k 5\n"
    child = store.create_from_modelfile("child", text, model_dir)
    assert child.model_path == base.model_path
    assert child.template == TEMPLATE
    assert child.system == "You are verbose."
    assert child.parameters == {"temperature": 0.9, "stop": ["</s>", "<|end|>"], "top_k": 5}
    assert child.messages == base.messages
    assert child.license == ["MIT"]
    assert child.details()["parent_model"] == "base:v1"
    assert child.details()["parameter_size"] == "116K"
    # the base is untouched
    assert store.get("base:v1").system == "You are terse."


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


def test_get_unknown_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound) as info:
        store.get("nope")
    assert info.value.status == 404
    assert info.value.message == "model 'nope' not found"


def test_list_is_newest_first(store: ModelStore, model_dir: Path) -> None:
    for i, name in enumerate(["old", "newest", "middle"]):
        store.create_from_modelfile(name, f"FROM tiny.gguf\nSYSTEM {i}", model_dir)
    stamps = {"old": 1_000_000, "middle": 2_000_000, "newest": 3_000_000}
    for name, stamp in stamps.items():
        os.utime(store.root / f"manifests/registry.ollama.ai/library/{name}/latest", (stamp, stamp))
    assert [m.name.model for m in store.list()] == ["newest", "middle", "old"]
    assert store.list()[0].modified_at.timestamp() == 3_000_000
    assert store.list()[0].modified_at.tzinfo is not None


def test_copy_then_delete_keeps_shared_blobs(store: ModelStore, model_dir: Path) -> None:
    original = store.create_from_modelfile("a", MODELFILE, model_dir)
    all_blobs = blobs(store)
    copied = store.copy("a", "user/b:v2")
    assert copied.name.display == "user/b:v2"
    assert copied.digest == original.digest
    assert {m.name.display for m in store.list()} == {"a:latest", "user/b:v2"}

    store.delete("A")
    assert [m.name.display for m in store.list()] == ["user/b:v2"]
    assert blobs(store) == all_blobs  # b still uses every blob
    assert not (store.root / "manifests/registry.ollama.ai/library").exists()

    store.delete("user/b:v2")
    assert blobs(store) == set()
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
    assert system_one not in blobs(store)
    assert system_two in blobs(store)
    assert one.model_path == two.model_path
    assert store.get("two").system == "only in two"


def test_copy_unknown_source(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'ghost' not found"):
        store.copy("ghost", "other")


def test_write_blob(store: ModelStore) -> None:
    data = b"hello blob"
    assert store.write_blob(sha256(data), [data[:5], data[5:]]) is True
    assert store.has_blob(sha256(data))
    assert store.blob_path(sha256(data)).read_bytes() == data
    assert store.write_blob(sha256(data), [b"never read"]) is False
    assert store.blob_path(sha256(data)).read_bytes() == data


def test_write_blob_digest_mismatch_leaves_nothing_behind(store: ModelStore) -> None:
    wanted = sha256(b"expected content")
    with pytest.raises(InvalidRequest) as info:
        store.write_blob(wanted, [b"other content"])
    assert info.value.message == (
        f"digest mismatch, expected {wanted}, got {sha256(b'other content')}"
    )
    assert blobs(store) == set()
    assert not store.has_blob(wanted)


def test_write_blob_interrupted_leaves_nothing_behind(store: ModelStore) -> None:
    def chunks():
        yield b"first half"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.write_blob(sha256(b"first half and more"), chunks())
    assert blobs(store) == set()


def test_invalid_digest(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="invalid digest"):
        store.blob_path("sha256:../../etc/passwd")


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


def test_damaged_model_is_left_out_of_the_list(store: ModelStore, model_dir: Path) -> None:
    store.create_from_modelfile("good", "FROM tiny.gguf", model_dir)
    bad = store.create_from_modelfile("bad", "FROM tiny.gguf\nSYSTEM gone", model_dir)
    store.blob_path(sha256(b"gone")).unlink()
    assert [m.name.display for m in store.list()] == ["good:latest"]
    with pytest.raises(Exception, match="damaged"):
        store.get("bad")
    assert bad.model_path.exists()


def test_from_a_file_that_is_not_gguf(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just text")
    with pytest.raises(InvalidRequest, match=r"notes\.txt is not a GGUF file"):
        store.create_from_modelfile("x", "FROM ./notes.txt", tmp_path)
    assert blobs(store) == set()


def test_from_a_missing_file(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"no such file .*missing\.gguf"):
        store.create_from_modelfile("x", "FROM ./missing.gguf", tmp_path)


def test_from_an_unknown_model(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="model 'ghost' not found"):
        store.create_from_modelfile("x", "FROM ghost", tmp_path)


def test_from_home_relative_path(
    store: ModelStore, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(model_dir.parent))
    model = store.create_from_modelfile("home", "FROM ~/src/tiny.gguf", Path("/nonexistent"))
    assert model.details()["family"] == "llama"


def test_unsupported_instructions_are_refused(store: ModelStore, model_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="ADAPTER"):
        store.create_from_modelfile("x", "FROM tiny.gguf\nADAPTER ./lora.gguf", model_dir)
    assert store.list() == []


def test_create_rejects_unknown_parameters(store: ModelStore, model_dir: Path) -> None:
    digest = store.import_file(model_dir / "tiny.gguf")
    with pytest.raises(InvalidRequest, match="unknown parameter 'warmth'"):
        store.create("x", model_digest=digest, parameters={"warmth": 1})
    with pytest.raises(InvalidRequest, match='option "top_k" must be of type integer'):
        store.create("x", model_digest=digest, parameters={"top_k": "many"})
    assert store.list() == []


def test_create_from_missing_blob(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match=r"blob sha256:0{64} not found"):
        store.create("x", model_digest="sha256:" + "0" * 64)


def test_default_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HANA_MODELS", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".hana" / "models"
    monkeypatch.setenv("OLLAMA_MODELS", "/srv/ollama")
    assert default_models_dir() == Path("/srv/ollama")
    monkeypatch.setenv("HANA_MODELS", "~/hana")
    assert default_models_dir() == tmp_path / "hana"
