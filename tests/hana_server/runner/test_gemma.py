"""The real default model (gemma3:270m, sliding-window attention) through a runner process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hana_server.launchers import RunnerClient
from runner_harness import StartRunner

pytestmark = pytest.mark.gemma

GREEDY = {"temperature": 0, "top_k": 1}


def turn(user: str) -> str:
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


async def complete(client: RunnerClient, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    async for message in client.completion(payload):
        if message.get("done"):
            return "".join(parts), message
        parts.append(message["content"])
    raise AssertionError("stream ended without a final message")


async def test_follow_up_turn_reuses_the_cache_with_full_swa(
    start_runner: StartRunner, gemma_gguf_path: Path
) -> None:
    runner = await start_runner(gemma_gguf_path, ctx_size=1024, swa_full=True, threads=2)
    first = turn("Name three colours of the rainbow.")
    answer, final = await complete(
        runner.client, {"prompt": first, "options": {**GREEDY, "num_predict": 24}}
    )
    assert final["prompt_cache_count"] == 0 and answer
    follow_up = first + answer + "<end_of_turn>\n" + turn("And two more?")
    text, final = await complete(
        runner.client, {"prompt": follow_up, "options": {**GREEDY, "num_predict": 12}}
    )
    first_tokens = await runner.client.tokenize(first)
    assert final["prompt_cache_count"] >= len(first_tokens)
    assert final["prompt_eval_count"] == len(await runner.client.tokenize(follow_up))

    # The reused cache gives the same answer as reading the whole conversation afresh.
    fresh = await start_runner(gemma_gguf_path, ctx_size=1024, swa_full=True, threads=2)
    fresh_text, fresh_final = await complete(
        fresh.client, {"prompt": follow_up, "options": {**GREEDY, "num_predict": 12}}
    )
    assert fresh_final["prompt_cache_count"] == 0
    assert text == fresh_text


async def test_json_schema_output_parses_and_validates(
    start_runner: StartRunner, gemma_gguf_path: Path
) -> None:
    runner = await start_runner(gemma_gguf_path, ctx_size=1024, threads=2)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0},
            "colours": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["name", "age", "colours"],
    }
    prompt = turn("Describe a person called Ada, aged 36, as JSON.")
    text, final = await complete(
        runner.client,
        {"prompt": prompt, "json_schema": schema, "options": {**GREEDY, "num_predict": 200}},
    )
    assert final["done_reason"] == "stop"  # the grammar ended the answer, not the token limit
    document = json.loads(text)
    jsonschema.validate(document, schema)
