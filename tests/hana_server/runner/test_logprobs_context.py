"""Logprobs, `context` and context shifts through a real runner process on the tiny model; the
logprobs are checked against llama-cpp-python's own logits for the same tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from hana_server.launchers import RunnerClient
from runner_harness import StartRunner

from hana_protocol.errors import InvalidRequest

GREEDY = {"temperature": 0}


async def run(client: RunnerClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [message async for message in client.completion(body)]


def reference_logprobs(model_path: Path, prompt_tokens: list[int], answer: list[int]) -> np.ndarray:
    """log_softmax of llama-cpp-python's logits at every answer position (row i predicts
    answer[i]), computed here from `Llama.eval` with all logits kept."""
    llama = llama_cpp.Llama(str(model_path), n_ctx=512, logits_all=True, verbose=False, n_threads=1)
    try:
        llama.eval(prompt_tokens + answer[:-1])
        logits = np.array(llama.scores[: llama.n_tokens], dtype=np.float64)
    finally:
        llama.close()
    rows = logits[len(prompt_tokens) - 1 :]
    peak = rows.max(axis=1, keepdims=True)
    return rows - peak - np.log(np.exp(rows - peak).sum(axis=1, keepdims=True))


async def test_logprobs_match_llama_cpp_logits(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    prompt = "The quick brown fox"
    messages = await run(
        runner.client,
        {
            "prompt": prompt,
            "options": {**GREEDY, "num_predict": 12},
            "logprobs": True,
            "top_logprobs": 3,
            "return_context": True,
        },
    )
    final = messages[-1]
    entries = [entry for m in messages[:-1] for entry in m.get("logprobs", [])]
    assert len(entries) == 12  # one per generated token, none lost or repeated
    text = "".join(m.get("content", "") for m in messages[:-1])
    # Byte tokens make characters of several tokens: the bytes add up to the text.
    raw = bytes(b for entry in entries for b in entry.get("bytes", []))
    assert raw.decode("utf-8", errors="replace") == text

    prompt_tokens = await runner.client.tokenize(prompt)
    answer = final["context"][len(prompt_tokens) - 1 :]  # context = prompt (no BOS) + answer
    assert len(answer) == 12
    expected = reference_logprobs(tiny_gguf_path, prompt_tokens, answer)
    for position, entry in enumerate(entries):
        row = expected[position]
        assert entry["logprob"] == pytest.approx(row[answer[position]], abs=1e-2)
        assert len(entry["top_logprobs"]) == 3
        best = np.argsort(-row)[:3]
        assert [alt["logprob"] for alt in entry["top_logprobs"]] == pytest.approx(
            [row[i] for i in best], abs=1e-2
        )
        # Greedy: the sampled token is the most likely one.
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert bytes(entry["bytes"]).decode("utf-8", errors="replace") == entry["token"]


async def test_logprobs_follow_penalties_and_are_off_unless_asked(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    plain = await run(runner.client, {"prompt": "abc", "options": {**GREEDY, "num_predict": 6}})
    assert not any("logprobs" in m for m in plain)
    top_only = await run(
        runner.client,
        {"prompt": "abc", "options": {**GREEDY, "num_predict": 6}, "top_logprobs": 5},
    )
    assert not any("logprobs" in m for m in top_only)  # top_logprobs alone asks for nothing
    zero = await run(
        runner.client,
        {"prompt": "abc", "options": {**GREEDY, "num_predict": 6}, "logprobs": True},
    )
    entries = [e for m in zero for e in m.get("logprobs", [])]
    assert len(entries) == 6 and all(e["top_logprobs"] == [] for e in entries)

    # A strong repeat penalty changes the distribution the logprobs describe, and the text.
    penalised = await run(
        runner.client,
        {
            "prompt": "abc",
            "options": {**GREEDY, "num_predict": 6, "repeat_penalty": 50.0},
            "logprobs": True,
            "top_logprobs": 1,
        },
    )
    entries_p = [e for m in penalised for e in m.get("logprobs", [])]
    assert len(entries_p) == 6
    assert all(e["top_logprobs"][0]["token"] == e["token"] for e in entries_p)
    assert [e["logprob"] for e in entries_p] != pytest.approx([e["logprob"] for e in entries])


async def test_logprobs_with_stop_strings_cover_the_shown_text_only(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    body = {"prompt": "stop here", "options": {**GREEDY, "num_predict": 30}, "logprobs": True}
    full = await run(runner.client, body)
    text = "".join(m.get("content", "") for m in full)
    stop = text[10:12]
    shown = text[: text.index(stop)]
    stopped = await run(runner.client, {**body, "options": {**body["options"], "stop": [stop]}})
    assert stopped[-1]["done_reason"] == "stop"
    assert "".join(m.get("content", "") for m in stopped) == shown
    raw = bytes(b for m in stopped for e in m.get("logprobs", []) for b in e.get("bytes", []))
    tokens = raw.decode("utf-8", errors="replace")
    assert tokens.startswith(shown) and stop not in tokens
    # `context` likewise ends with the shown text: the stop string's tokens are not in it.
    with_context = await run(
        runner.client,
        {**body, "options": {**body["options"], "stop": [stop]}, "return_context": True},
    )
    prompt_length = len(await runner.client.tokenize("stop here")) - 1  # without BOS
    answer = await runner.client.detokenize(with_context[-1]["context"][prompt_length:])
    assert answer.startswith(shown) and stop not in answer


async def test_bad_logprobs_and_context_are_400s_and_the_runner_lives_on(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    for extra, message in [
        ({"top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"top_logprobs": -1, "logprobs": True}, "top_logprobs must be between 0 and 20"),
        ({"context": [1, 2, 10**6]}, "outside the vocabulary"),
        ({"context": [-3]}, "outside the vocabulary"),
        ({"context": ["a"]}, "context must be a list of integers"),
        ({"context": [True]}, "context must be a list of integers"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await run(runner.client, {"prompt": "x", "options": GREEDY, **extra})
    done = await run(runner.client, {"prompt": "x", "options": {**GREEDY, "num_predict": 2}})
    assert done[-1]["eval_count"] == 2


async def test_context_round_trip_continues_the_same_tokens(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    client = runner.client
    first = await run(
        client,
        {"prompt": "one", "options": {**GREEDY, "num_predict": 5}, "return_context": True},
    )
    context = first[-1]["context"]
    prompt_tokens = await client.tokenize("one")
    assert context[: len(prompt_tokens) - 1] == prompt_tokens[1:]  # BOS is not part of it
    assert len(context) == len(prompt_tokens) - 1 + 5
    second = await run(
        client,
        {
            "prompt": " two",
            "context": context,
            "options": {**GREEDY, "num_predict": 4},
            "return_context": True,
        },
    )
    tail = await client.tokenize(" two", add_special=False)
    assert second[-1]["context"][: len(context) + len(tail)] == context + tail
    assert second[-1]["prompt_eval_count"] == 1 + len(context) + len(tail)
    # The cached prefix of the first exchange is reused: only the new tokens are evaluated.
    assert second[-1]["prompt_cache_count"] == len(prompt_tokens) + 4


async def test_full_context_shifts_or_ends_with_length(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=64)
    body = {"prompt": "fill it", "options": {**GREEDY, "num_predict": 150}}
    prompt_tokens = await runner.client.tokenize("fill it")
    no_shift = await run(runner.client, {**body, "shift": False})
    assert no_shift[-1]["done_reason"] == "length"
    assert no_shift[-1]["eval_count"] == 64 - len(prompt_tokens) + 1

    shifted = await run(runner.client, body)
    assert shifted[-1]["done_reason"] == "length"
    assert shifted[-1]["eval_count"] == 150  # past the 64-token context, num_predict ends it
    # Until the first shift the answer is the unshifted one.
    first_part = "".join(m.get("content", "") for m in no_shift[:-1])
    assert "".join(m.get("content", "") for m in shifted[:-1]).startswith(first_part[:40])


async def test_a_shift_moves_only_its_own_sequence(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=64, parallel=2)
    short = {"prompt": "short one", "options": {**GREEDY, "num_predict": 50}}
    alone = await run(runner.client, short)
    # About 45 prompt tokens: the long one shifts several times while the short one generates.
    long = {"prompt": "long one " * 5, "options": {**GREEDY, "num_predict": 200}}
    results = await asyncio.gather(run(runner.client, long), run(runner.client, short))
    assert results[0][-1]["eval_count"] == 200
    text = "".join(m.get("content", "") for m in results[1])
    assert text == "".join(m.get("content", "") for m in alone)


async def test_logprobs_with_a_grammar_and_sampling(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    body = {
        "prompt": "digits:",
        "grammar": 'root ::= [0-9]+ "."',
        "options": {"num_predict": 20, "temperature": 0.9, "seed": 4, "repeat_penalty": 1.3},
        "logprobs": True,
        "top_logprobs": 2,
    }
    messages = await run(runner.client, body)
    text = "".join(m.get("content", "") for m in messages)
    assert text.rstrip(".").isdigit()
    entries = [e for m in messages for e in m.get("logprobs", [])]
    assert "".join(e["token"] for e in entries) == text
    # The unconstrained distribution: the grammar's digits need not be the most likely tokens.
    assert all(e["logprob"] <= e["top_logprobs"][0]["logprob"] + 1e-6 for e in entries)
    # Logprobs do not change what is sampled: the same seed gives the same text without them.
    plain = await run(runner.client, {**body, "logprobs": False})
    assert "".join(m.get("content", "") for m in plain) == text


async def test_asking_for_logprobs_does_not_change_the_sampled_text(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path)
    options = {"num_predict": 24, "temperature": 0.8, "top_k": 20, "seed": 9}
    for extra in ({}, {"repeat_penalty": 1.5, "presence_penalty": 0.5}):
        body = {"prompt": "same text", "options": {**options, **extra}}
        plain = await run(runner.client, body)
        with_logprobs = await run(runner.client, {**body, "logprobs": True, "top_logprobs": 4})
        text = "".join(m.get("content", "") for m in plain)
        assert "".join(m.get("content", "") for m in with_logprobs) == text
        assert len([e for m in with_logprobs for e in m.get("logprobs", [])]) == 24


@pytest.mark.gemma
@pytest.mark.parametrize("swa_full", [True, False])
async def test_gemma_shifts_past_its_context_and_gives_logprobs(
    start_runner: StartRunner, gemma_gguf_path: Path, swa_full: bool
) -> None:
    """The real model (sliding-window attention, 262k vocabulary), with and without a full-size
    SWA cache: generation goes on past a 64-cell context, logprobs come for every token."""
    runner = await start_runner(gemma_gguf_path, ctx_size=64, swa_full=swa_full, threads=2)
    body = {
        "prompt": "<start_of_turn>user\nCount from one to a hundred in words.<end_of_turn>\n"
        "<start_of_turn>model\n",
        "options": {**GREEDY, "num_predict": 100},
        "logprobs": True,
        "top_logprobs": 2,
    }
    messages = await run(runner.client, body)
    final = messages[-1]
    assert (final["eval_count"], final["done_reason"]) == (100, "length")  # shifted on
    entries = [e for m in messages for e in m.get("logprobs", [])]
    assert len(entries) == 100
    assert all(e["logprob"] <= 0.0 and len(e["top_logprobs"]) == 2 for e in entries)
