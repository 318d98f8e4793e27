"""Creating models: from a Modelfile, a GGUF blob or another model; layers, config, progress."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore
from store_files import MODELFILE, TEMPLATE, blob_files, sha256
from tiny_gguf import write_tiny_gguf

from hana_protocol.errors import InvalidRequest, ModelNotFound


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
    assert not any(name.startswith(".tmp") for name in blob_files(store.blobs_dir))


def test_second_create_from_same_file_reuses_the_blob(store: ModelStore, model_dir: Path) -> None:
    first = store.create_from_modelfile("a", "FROM tiny.gguf\n", model_dir)
    before = blob_files(store.blobs_dir)
    statuses: list[str] = []
    second = store.create_from_modelfile(
        "b", "FROM tiny.gguf\nSYSTEM hi\n", model_dir, statuses.append
    )
    assert second.model_path == first.model_path
    assert not any(s.startswith("copying file") for s in statuses)
    assert len(blob_files(store.blobs_dir) - before) == 2  # the system layer and the new config
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


def test_from_a_file_that_is_not_gguf(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just text")
    with pytest.raises(InvalidRequest, match=r"notes\.txt is not a GGUF file"):
        store.create_from_modelfile("x", "FROM ./notes.txt", tmp_path)
    assert blob_files(store.blobs_dir) == set()


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
