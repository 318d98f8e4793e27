"""The native Ollama API against a real `hana serve` with real runner processes on tiny models."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest
from server_harness import HanaServerProcess


def lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_root_and_version(server: HanaServerProcess) -> None:
    assert server.http.get("/").text == "Ollama is running"
    assert server.http.head("/").status_code == 200
    version = server.http.get("/api/version").json()
    assert version["version"].count(".") == 2


def test_tags_lists_created_models_with_gguf_details(server: HanaServerProcess) -> None:
    models = {m["name"]: m for m in server.http.get("/api/tags").json()["models"]}
    assert {"tiny:latest", "tiny2:latest", "tiny3:latest"} <= set(models)
    tiny = models["tiny:latest"]
    assert tiny["model"] == "tiny:latest"
    assert len(tiny["digest"]) == 64
    assert tiny["size"] > 100_000
    assert tiny["details"]["format"] == "gguf"
    assert tiny["details"]["family"] == "llama"
    assert tiny["details"]["quantization_level"] == "F32"
    datetime.fromisoformat(tiny["modified_at"])


def test_generate_streams_ndjson_with_metrics_on_the_last_chunk(
    server: HanaServerProcess,
) -> None:
    body = {"model": "tiny", "prompt": "hello", "options": {"num_predict": 12, "temperature": 0}}
    response = server.http.post("/api/generate", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    chunks = lines(response)
    assert len(chunks) >= 2
    assert all(not c["done"] and "response" in c for c in chunks[:-1])
    final = chunks[-1]
    assert final["done"] is True
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 12
    assert final["prompt_eval_count"] >= 2
    for key in ("total_duration", "eval_duration", "prompt_eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert "eval_count" not in chunks[0]


def test_generate_without_stream_is_one_object_with_the_whole_text(
    server: HanaServerProcess,
) -> None:
    options = {"num_predict": 10, "temperature": 0}
    streamed = lines(
        server.http.post(
            "/api/generate", json={"model": "tiny", "prompt": "abc", "options": options}
        )
    )
    single = server.http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "abc", "options": options, "stream": False},
    )
    assert single.headers["content-type"].startswith("application/json")
    data = single.json()
    assert data["done"] is True
    assert data["response"] == "".join(c["response"] for c in streamed)
    assert data["eval_count"] == 10


def test_chat_streams_assistant_messages(server: HanaServerProcess) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "User", "content": "hi"}],
        "options": {"num_predict": 6},
        "stream": False,
    }
    data = server.http.post("/api/chat", json=body).json()
    assert data["message"]["role"] == "assistant"
    assert isinstance(data["message"]["content"], str)
    assert data["eval_count"] == 6
    assert data["done_reason"] == "length"


def test_stop_string_ends_generation_with_reason_stop(server: HanaServerProcess) -> None:
    options = {"num_predict": 40, "temperature": 0}
    text = server.http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "raw": True, "options": options, "stream": False},
    ).json()["response"]
    stop = text[5:7]
    assert stop, "the tiny model should produce text"
    data = server.http.post(
        "/api/generate",
        json={
            "model": "tiny",
            "prompt": "x",
            "raw": True,
            "stream": False,
            "options": {**options, "stop": [stop]},
        },
    ).json()
    assert data["done_reason"] == "stop"
    assert stop not in data["response"]
    assert text.startswith(data["response"])


def test_load_only_and_unload(server: HanaServerProcess) -> None:
    loaded = server.http.post("/api/generate", json={"model": "tiny2", "prompt": ""}).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    assert "tiny2:latest" in [m["name"] for m in server.ps()]
    unloaded = server.http.post(
        "/api/generate", json={"model": "tiny2", "prompt": "", "keep_alive": 0}
    ).json()
    assert unloaded["done_reason"] == "unload"
    from server_harness import wait_for

    wait_for(lambda: "tiny2:latest" not in [m["name"] for m in server.ps()])


def test_chat_with_no_messages_loads(server: HanaServerProcess) -> None:
    data = server.http.post("/api/chat", json={"model": "tiny3", "messages": []}).json()
    assert data["done_reason"] == "load"
    assert data["message"] == {"role": "assistant", "content": ""}


def test_ps_shows_ollama_fields_and_hana_state(server: HanaServerProcess) -> None:
    server.http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": "10m"})
    entry = next(m for m in server.ps() if m["name"] == "tiny:latest")
    for key in ("model", "size", "digest", "details", "expires_at", "size_vram", "context_length"):
        assert key in entry
    assert entry["state"] == "ready"
    assert entry["pid"] in server.runner_pids()
    assert entry["port"] > 0
    assert entry["num_parallel"] == 4
    remaining = datetime.fromisoformat(entry["expires_at"]) - datetime.now().astimezone()
    assert 500 < remaining.total_seconds() <= 600


def test_show_returns_details_template_and_model_info(server: HanaServerProcess) -> None:
    data = server.http.post("/api/show", json={"model": "tiny"}).json()
    assert data["details"]["family"] == "llama"
    assert data["model_info"]["general.architecture"] == "llama"
    assert data["model_info"]["llama.context_length"] == 4096
    assert "FROM" in data["modelfile"]
    assert "completion" in data["capabilities"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ("/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/show", {}, 400, "model is required"),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "keep_alive": "300"},
            400,
            "missing unit",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "options": {"temperature": "hot"}},
            400,
            'option "temperature" must be of type float32',
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "format": "yaml"},
            400,
            "invalid format",
        ),
        ("/api/generate", {"model": "tiny", "prompt": 5}, 400, "prompt"),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "think": True},
            400,
            "does not support thinking",
        ),
        ("/api/generate", {"model": "bad name!", "prompt": "x"}, 400, "invalid model name"),
    ],
)
def test_errors_have_ollama_shape_and_status(
    server: HanaServerProcess, path: str, body: dict, status: int, message: str
) -> None:
    response = server.http.post(path, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "missing request body"), (b"{nope", "invalid JSON")]
)
def test_bad_bodies_are_400(server: HanaServerProcess, content: bytes, message: str) -> None:
    response = server.http.post("/api/generate", content=content)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert server.http.get("/").status_code == 200  # and the server is still up


def test_copy_and_delete(server: HanaServerProcess) -> None:
    assert (
        server.http.post(
            "/api/copy", json={"source": "tiny", "destination": "mine/copy:v1"}
        ).status_code
        == 200
    )
    names = [m["name"] for m in server.http.get("/api/tags").json()["models"]]
    assert "mine/copy:v1" in names
    assert (
        server.http.request("DELETE", "/api/delete", json={"model": "mine/copy:v1"}).status_code
        == 200
    )
    missing = server.http.request("DELETE", "/api/delete", json={"model": "mine/copy:v1"})
    assert missing.status_code == 404
    # the blob is still used by `tiny`, so tiny still answers
    data = server.http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
    ).json()
    assert data["eval_count"] == 2


def test_blob_upload_checks_the_digest(server: HanaServerProcess) -> None:
    wrong = "sha256:" + "0" * 64
    response = server.http.post(f"/api/blobs/{wrong}", content=b"some bytes")
    assert response.status_code == 400
    assert "digest mismatch" in response.json()["error"]
    assert server.http.head(f"/api/blobs/{wrong}").status_code == 404
    assert server.http.head("/api/blobs/sha256:xyz").status_code == 400
    # The refused upload left no temp file behind.
    assert not list((server.models_dir / "blobs").glob(".tmp-*"))


def test_create_with_modelfile_fields_and_parameters(server: HanaServerProcess) -> None:
    tags = server.http.get("/api/tags").json()["models"]
    digest_of_tiny = server.http.post("/api/show", json={"model": "tiny"}).json()
    assert digest_of_tiny
    response = server.http.post(
        "/api/create",
        json={
            "model": "tiny-sys",
            "from": "tiny",
            "system": "You are terse.",
            "parameters": {"num_predict": 3, "stop": ["zz"]},
        },
    )
    statuses = lines(response)
    assert statuses[-1] == {"status": "success"}
    shown = server.http.post("/api/show", json={"model": "tiny-sys"}).json()
    assert shown["system"] == "You are terse."
    assert "num_predict" in shown["parameters"]
    data = server.http.post(
        "/api/generate", json={"model": "tiny-sys", "prompt": "x", "stream": False}
    ).json()
    assert data["eval_count"] == 3  # the PARAMETER applies
    assert len(server.http.get("/api/tags").json()["models"]) == len(tags) + 1


def test_create_from_unknown_model_fails_cleanly(server: HanaServerProcess) -> None:
    response = server.http.post("/api/create", json={"model": "x", "from": "nope", "stream": False})
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
