"""Completions through a real runner process over HTTP, on the tiny model (greedy never hits EOS, so
num_predict alone sets the length)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from hana_server.launchers import RunnerClient, RunnerProcess
from runner_harness import StartRunner

from hana_protocol.errors import InvalidRequest

GREEDY = {"temperature": 0}


async def complete(client: RunnerClient, prompt: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """The whole text and the final message of one completion."""
    parts: list[str] = []
    async for message in client.completion({"prompt": prompt, "options": options}):
        if message.get("done"):
            return "".join(parts), message
        parts.append(message["content"])
    raise AssertionError("stream ended without a final message")


async def wait_for_health(client: RunnerClient, key: str, value: Any) -> dict[str, Any]:
    for _ in range(200):
        health = await client.health()
        if health[key] == value:
            return health
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never reported {key}={value!r}: {health}")


async def test_one_stream_generates_exactly_num_predict_tokens(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    prompt_tokens = await runner.client.tokenize("Once upon a time")
    chunks = []
    async for message in runner.client.completion(
        {"prompt": "Once upon a time", "options": {**GREEDY, "num_predict": 17}}
    ):
        chunks.append(message)
    final = chunks[-1]
    assert final["done"] is True
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 17
    assert final["prompt_eval_count"] == len(prompt_tokens)
    assert final["prompt_cache_count"] == 0
    assert final["prompt_eval_duration"] > 0 and final["eval_duration"] > 0
    assert all("content" in chunk for chunk in chunks[:-1])
    assert 0 < len(chunks) - 1 <= 17


async def test_four_concurrent_streams_keep_their_own_options(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, parallel=4, ctx_size=256)
    client = runner.client
    prompts = [f"request number {index}: " for index in range(4)]
    # Alone first, to pick stop strings that really occur in two of the answers.
    alone = [await complete(client, prompt, **GREEDY, num_predict=40) for prompt in prompts]
    stop_a = alone[0][0][12:14]
    stop_b = alone[1][0][20:23]
    expected_a = alone[0][0][: alone[0][0].index(stop_a)]
    expected_b = alone[1][0][: alone[1][0].index(stop_b)]

    results = await asyncio.gather(
        complete(client, prompts[0], **GREEDY, num_predict=40, stop=[stop_a]),
        complete(client, prompts[1], **GREEDY, num_predict=40, stop=["never there", stop_b]),
        complete(client, prompts[2], **GREEDY, num_predict=11),
        complete(client, prompts[3], num_predict=29, temperature=0.9, top_k=20, seed=3),
    )
    (text_a, final_a), (text_b, final_b), (text_c, final_c), (_, final_d) = results
    assert (text_a, final_a["done_reason"]) == (expected_a, "stop")
    assert (text_b, final_b["done_reason"]) == (expected_b, "stop")
    assert final_c["done_reason"] == "length" and final_c["eval_count"] == 11
    assert text_c == (await complete(client, prompts[2], **GREEDY, num_predict=11))[0]
    assert final_d["done_reason"] == "length" and final_d["eval_count"] == 29


async def test_greedy_text_is_the_same_alone_and_in_a_batch_of_four(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, parallel=4, ctx_size=256)
    client = runner.client
    alone, _ = await complete(client, "The same seed", **GREEDY, seed=42, num_predict=48)
    batch = await asyncio.gather(
        complete(client, "The same seed", **GREEDY, seed=42, num_predict=48),
        complete(client, "something else entirely", **GREEDY, num_predict=60),
        complete(client, "a third prompt", num_predict=30, temperature=1.0, seed=1),
        complete(client, "and a fourth, longer prompt with more tokens", **GREEDY, num_predict=20),
    )
    assert batch[0][0] == alone
    # A different prompt really produces different text: the comparison above can fail.
    assert batch[1][0] != alone


async def test_seeded_sampling_is_reproducible(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    options = {"num_predict": 30, "temperature": 1.5, "seed": 7}
    first, _ = await complete(runner.client, "dice", **options)
    second, _ = await complete(runner.client, "dice", **options)
    other, _ = await complete(runner.client, "dice", **{**options, "seed": 8})
    assert first == second
    assert first != other


async def test_cancelled_stream_frees_its_slot_while_others_continue(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, parallel=4, ctx_size=2048)
    client = runner.client
    long = {**GREEDY, "num_predict": 1800}
    order: list[str] = []

    async def run(name: str, **options: Any) -> dict[str, Any]:
        _, final = await complete(client, f"stream {name}", **options)
        order.append(name)
        return final

    others = [asyncio.create_task(run(name, **long)) for name in ("a", "b", "c")]
    stream = client.completion({"prompt": "to be cancelled", "options": long})
    received = 0
    async for _message in stream:
        received += 1
        if received == 5:
            break
    await stream.aclose()  # closes the connection: the runner must drop the sequence
    await wait_for_health(client, "active", 3)

    late = await run("late", **GREEDY, num_predict=10)
    assert late["eval_count"] == 10
    assert order[0] == "late"  # it got the freed slot instead of waiting for the long ones
    finals = await asyncio.gather(*others)
    assert [final["eval_count"] for final in finals] == [1800, 1800, 1800]
    assert (await client.health())["active"] == 0


async def test_follow_up_prompt_reuses_the_cached_prefix(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=256)
    client = runner.client
    first = "You are a helpful assistant. User: hello"
    first_tokens = await client.tokenize(first)
    _, final = await complete(client, first, **GREEDY, num_predict=5)
    assert final["prompt_cache_count"] == 0

    follow_up = first + " Assistant: hi there. User: and now?"
    follow_up_tokens = await client.tokenize(follow_up)
    assert follow_up_tokens[: len(first_tokens)] == first_tokens
    _, final = await complete(client, follow_up, **GREEDY, num_predict=5)
    assert final["prompt_eval_count"] == len(follow_up_tokens)
    assert final["prompt_cache_count"] == len(first_tokens)

    # The very same prompt again: everything but the last token (it is evaluated for its logits).
    _, final = await complete(client, follow_up, **GREEDY, num_predict=5)
    assert final["prompt_cache_count"] == len(follow_up_tokens) - 1


async def test_prompt_longer_than_the_context_is_truncated_or_refused(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=64)
    _, final = await complete(runner.client, "x" * 300, **GREEDY, num_predict=8)
    assert final["prompt_eval_count"] < 64
    assert final["eval_count"] == 8
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        async for _ in runner.client.completion(
            {"prompt": "x" * 300, "truncate": False, "options": GREEDY}
        ):
            pass


async def test_unlimited_prediction_stops_when_the_context_is_full(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=64)
    prompt_tokens = await runner.client.tokenize("fill it")
    parts = []
    async for message in runner.client.completion(
        {"prompt": "fill it", "shift": False, "options": {**GREEDY, "num_predict": -1}}
    ):
        parts.append(message)
    final = parts[-1]
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 64 - len(prompt_tokens) + 1


async def test_invalid_schema_or_grammar_is_a_400_and_the_runner_lives_on(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    for payload in (
        {"json_schema": {"type": "bogus"}},
        {"json_schema": {"properties": {"a": {"$ref": "#/definitions/missing"}}}},
        {"grammar": "root ::= undefined-rule"},
    ):
        with pytest.raises(InvalidRequest, match=r"invalid JSON schema|grammar"):
            async for _ in runner.client.completion({"prompt": "x", **payload}):
                pass
    with pytest.raises(InvalidRequest, match='option "top_k" must be of type integer'):
        async for _ in runner.client.completion({"prompt": "x", "options": {"top_k": "many"}}):
            pass
    assert (await runner.client.health())["status"] == "ok"
    _, final = await complete(runner.client, "still alive", **GREEDY, num_predict=3)
    assert final["eval_count"] == 3


async def test_grammar_constrains_the_tiny_model(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    text = ""
    async for message in runner.client.completion(
        {"prompt": "digits:", "grammar": 'root ::= [0-9]+ "."', "options": {"num_predict": 40}}
    ):
        text += message.get("content", "")
        final = message
    assert final["done_reason"] in {"stop", "length"}
    body = text[:-1] if text.endswith(".") else text
    assert body and body.isdigit()


async def test_tokenize_detokenize_threads(start_runner: StartRunner, tiny_gguf_path: Path) -> None:
    runner = await start_runner(tiny_gguf_path)
    tokens = await runner.client.tokenize("héllo")
    assert tokens[0] == 1  # BOS added: the vocabulary asks for it
    # SentencePiece vocabularies mark the start of the text with a space, which comes back.
    assert await runner.client.detokenize(tokens[1:]) == " héllo"
    assert await runner.client.set_threads(2) == 2
    await wait_for_health(runner.client, "threads", 2)  # the engine thread applies it
    _, final = await complete(runner.client, "after", **GREEDY, num_predict=4)
    assert final["eval_count"] == 4
    with pytest.raises(InvalidRequest):
        await runner.client.detokenize([10**9])


async def test_requests_need_the_secret(start_runner: StartRunner, tiny_gguf_path: Path) -> None:
    runner: RunnerProcess = await start_runner(tiny_gguf_path)
    async with httpx.AsyncClient(base_url=runner.client.base_url, trust_env=False) as http:
        for method, path in (("GET", "/health"), ("POST", "/completion"), ("POST", "/threads")):
            for headers in ({}, {"X-Hana-Secret": "wrong"}):
                response = await http.request(method, path, json={"prompt": "x"}, headers=headers)
                assert response.status_code == 403
                assert "error" in response.json()
    assert (await runner.client.health())["status"] == "ok"


async def test_more_requests_than_slots_wait_their_turn(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, parallel=2, ctx_size=256)
    expected = [
        await complete(runner.client, f"queued {n}", **GREEDY, num_predict=9 + n) for n in range(5)
    ]
    results = await asyncio.gather(
        *(complete(runner.client, f"queued {n}", **GREEDY, num_predict=9 + n) for n in range(5))
    )
    assert [final["eval_count"] for _, final in results] == [9, 10, 11, 12, 13]
    assert [text for text, _ in results] == [text for text, _ in expected]
