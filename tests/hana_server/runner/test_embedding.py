"""Embedding runners (--embedding) on the tiny llama model, mean-pooled (no pooling in its GGUF)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from runner_harness import StartRunner

from hana_protocol.errors import InvalidRequest


async def test_embeddings_are_normalised_and_deterministic(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, embedding=True, parallel=2, ctx_size=128)
    texts = ["first input", "a second, longer input", "first input"]
    answer = await runner.client.embed(texts)
    vectors = answer["embeddings"]
    assert len(vectors) == 3
    assert all(len(vector) == 64 for vector in vectors)  # n_embd of the tiny model
    for vector in vectors:
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-6)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)  # same text, packed differently
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    tokens = [len(await runner.client.tokenize(text)) for text in texts]
    assert answer["prompt_eval_count"] == sum(tokens)
    alone = await runner.client.embed(["a second, longer input"])
    assert alone["embeddings"][0] == pytest.approx(vectors[1], abs=1e-6)


async def test_long_input_is_truncated_or_refused(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, embedding=True, ctx_size=64)
    answer = await runner.client.embed(["y" * 500], truncate=True)
    assert answer["prompt_eval_count"] == 64
    with pytest.raises(InvalidRequest, match="the input length exceeds the context length"):
        await runner.client.embed(["y" * 500], truncate=False)


async def test_generation_runner_does_not_embed_and_embedding_runner_does_not_generate(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    generator = await start_runner(tiny_gguf_path)
    with pytest.raises(InvalidRequest, match="--embedding"):
        await generator.client.embed(["x"])
    embedder = await start_runner(tiny_gguf_path, embedding=True)
    with pytest.raises(InvalidRequest, match="embeddings only"):
        async for _ in embedder.client.completion({"prompt": "x"}):
            pass
