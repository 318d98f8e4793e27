"""The runner process checks its own input (it is a process boundary): options that would size
its memory are bounded, malformed bodies are a 400, and it keeps serving afterwards. Real runner
processes on the tiny model."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from hana_server.runner.text import StopStrings
from runner_harness import StartRunner

from hana_protocol.options import MAX_STOP_LENGTH, MAX_STOP_STRINGS

GREEDY = {"temperature": 0}


async def final_of(runner: object, options: dict) -> dict:
    client = runner.client  # type: ignore[attr-defined]
    async for message in client.completion({"prompt": "Once upon a time", "options": options}):
        if message.get("done"):
            return message
    raise AssertionError("no final message")


async def test_options_that_would_size_the_runner_are_bounded_by_its_context(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, ctx_size=64)
    rss = psutil.Process(runner.pid).memory_info().rss
    # A penalty window of 2^62 tokens (16 EiB as a ring) and an endless num_predict.
    options = {"repeat_last_n": 2**62, "repeat_penalty": 1.3, "num_predict": 2**62}
    final = await final_of(runner, {**GREEDY, **options})
    assert final["done_reason"] == "length"
    # The context shifts when full; Ollama's cap of 10 x num_ctx ends it, not num_predict.
    assert final["eval_count"] == 10 * 64
    # Stop strings at the limits: long ones used to cost len^2/2 characters each to hold.
    stops = [chr(0x4E00 + i) * MAX_STOP_LENGTH for i in range(MAX_STOP_STRINGS)]
    final = await final_of(runner, {**GREEDY, "stop": stops, "num_predict": 8})
    assert final["eval_count"] == 8
    grown = psutil.Process(runner.pid).memory_info().rss - rss
    assert grown < 64 << 20, f"the runner grew by {grown >> 20} MiB"
    assert (await runner.client.health())["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"prompt": "x", "options": {"temperature": NaN}}', "invalid character 'N'"),
        (b'{"prompt": "x", "options": {"num_ctx": 1e400}}', "cannot unmarshal number"),
        (b'{"prompt": "x", "options": {"repeat_last_n": 1e300}}', "repeat_last_n"),
        (b'{"prompt": "x", "options": {"stop": ["' + b"s" * (MAX_STOP_LENGTH + 1) + b'"]}}',
         'option "stop" takes at most'),
        (b'{"prompt": "\xff"}', "not valid UTF-8"),
        (b'{"prompt": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "exceeded max depth"),
    ],
)  # fmt: skip
async def test_the_runner_refuses_malformed_bodies_itself(
    start_runner: StartRunner, tiny_gguf_path: Path, body: bytes, message: str
) -> None:
    runner = await start_runner(tiny_gguf_path)
    http = runner.client._http
    answer = await http.post("/completion", content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    # and a lone surrogate is read as Go reads it, not a crash in the tokenizer
    answer = await http.post(
        "/completion", content=b'{"prompt": "a\\ud800", "options": {"num_predict": 2}}'
    )
    assert answer.status_code == 200 and '"done": true' in answer.text


def test_long_stop_strings_are_matched_without_quadratic_state() -> None:
    stop = "ab" * (MAX_STOP_LENGTH // 2)
    stops = StopStrings([stop, "xyz"])
    shown, stopped = [], False
    for piece in ["q", *([stop[:100]] * 1), stop[100:-1], stop[-1], "tail"]:
        text, stopped = stops.feed(piece)
        shown.append(text)
        if stopped:
            break
    assert stopped and "".join(shown) == "q"
    overlapping = StopStrings(["aab"])
    assert overlapping.feed("aaaa") == ("aa", False)  # "aa" may still start "aab"
    assert overlapping.feed("ab!") == ("a", True)  # "aaaaab": the stop string starts at 3
