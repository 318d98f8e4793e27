"""Embeddings through /api/embed, /api/embeddings and /v1/embeddings on a tiny embedding model."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import pytest
from server_harness import HanaServerProcess
from tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def embedder(server: HanaServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_tiny_gguf(tmp_path_factory.mktemp("embed") / "embed.gguf", seed=5, pooling_type=1)
    server.create_model("tiny-embed", Path(path))
    return "tiny-embed"


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embed_many_inputs_l2_normalised(server: HanaServerProcess, embedder: str) -> None:
    data = server.http.post(
        "/api/embed", json={"model": embedder, "input": ["hello", "world", "hello"]}
    ).json()
    vectors = data["embeddings"]
    assert len(vectors) == 3
    assert len(vectors[0]) == 64  # the tiny model's embedding length
    assert all(abs(norm(v) - 1.0) < 1e-3 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert data["prompt_eval_count"] > 0
    assert (
        "embedding"
        in server.http.post("/api/show", json={"model": embedder}).json()["capabilities"]
    )


def test_legacy_embeddings_and_empty_prompt(server: HanaServerProcess, embedder: str) -> None:
    one = server.http.post("/api/embeddings", json={"model": embedder, "prompt": "hello"}).json()
    assert len(one["embedding"]) == 64
    empty = server.http.post("/api/embeddings", json={"model": embedder, "prompt": ""}).json()
    assert empty == {"embedding": []}


def test_openai_embeddings_float_and_base64(server: HanaServerProcess, embedder: str) -> None:
    floats = server.http.post("/v1/embeddings", json={"model": embedder, "input": "hi"}).json()
    vector = floats["data"][0]["embedding"]
    packed = server.http.post(
        "/v1/embeddings", json={"model": embedder, "input": ["hi"], "encoding_format": "base64"}
    ).json()["data"][0]["embedding"]
    raw = base64.b64decode(packed)
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(vector, abs=1e-6)


def test_generate_on_an_embedding_model_and_embed_on_a_chat_model_are_400(
    server: HanaServerProcess, embedder: str
) -> None:
    response = server.http.post("/api/generate", json={"model": embedder, "prompt": "x"})
    assert response.status_code == 400
    assert "does not support generate" in response.json()["error"]
    response = server.http.post("/api/embed", json={"model": "tiny", "input": "x"})
    assert response.status_code == 400
    assert "does not support embeddings" in response.json()["error"]


def test_dimensions_keep_the_first_values_renormalised(
    server: HanaServerProcess, embedder: str
) -> None:
    full = server.http.post("/api/embed", json={"model": embedder, "input": "hello"}).json()
    vector = full["embeddings"][0]
    cut = server.http.post(
        "/api/embed", json={"model": embedder, "input": "hello", "dimensions": 8}
    ).json()["embeddings"][0]
    head = vector[:8]
    assert cut == pytest.approx([x / norm(head) for x in head], abs=1e-5)
    assert abs(norm(cut) - 1.0) < 1e-5
    # 0 and anything not below the length leave the vector as it is (Ollama's rule).
    for dimensions in (0, 64, 1000):
        same = server.http.post(
            "/api/embed", json={"model": embedder, "input": "hello", "dimensions": dimensions}
        ).json()["embeddings"][0]
        assert same == pytest.approx(vector, abs=1e-6)
    openai_cut = server.http.post(
        "/v1/embeddings", json={"model": embedder, "input": "hello", "dimensions": 8}
    ).json()["data"][0]["embedding"]
    assert openai_cut == pytest.approx(cut, abs=1e-6)


def test_truncate_cuts_long_input_or_refuses_it(
    server: HanaServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A model of its own: a runner already loaded with a larger context would serve num_ctx 64.
    path = write_tiny_gguf(tmp_path_factory.mktemp("embed64") / "e.gguf", seed=6, pooling_type=1)
    server.create_model("tiny-embed-64", Path(path), parameters={"num_ctx": 64})
    body = {"model": "tiny-embed-64", "input": "word " * 400}
    cut = server.http.post("/api/embed", json=body)
    assert cut.status_code == 200, cut.text
    assert 0 < cut.json()["prompt_eval_count"] < 400
    assert abs(norm(cut.json()["embeddings"][0]) - 1.0) < 1e-3
    refused = server.http.post("/api/embed", json={**body, "truncate": False})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    short = server.http.post("/api/embed", json={**body, "input": "short", "truncate": False})
    assert short.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/embed", {"input": "x", "dimensions": -1}),
        ("/api/embed", {"input": "x", "dimensions": "8"}),
        ("/api/embed", {"input": "x", "truncate": "no"}),
        ("/v1/embeddings", {"input": "x", "dimensions": -4}),
    ],
)
def test_bad_dimensions_or_truncate_are_400(
    server: HanaServerProcess, embedder: str, path: str, body: dict[str, object]
) -> None:
    response = server.http.post(path, json={"model": embedder, **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert ("dimensions" in str(error)) or ("truncate" in str(error))
