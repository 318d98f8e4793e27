"""HarmonyParser (gpt-oss): channels to thinking and content, calls to functions, split tokens,
bad JSON and text that is not harmony at all."""

from __future__ import annotations

import pytest
from hana_server.parsers.harmony import MAX_HEADER, HarmonyParser
from hana_server.parsers.reply import ReplyParser


def run(text: str, size: int) -> tuple[str, str, list]:
    parser = ReplyParser(HarmonyParser())
    thinking = content = ""
    calls: list = []
    for i in range(0, len(text), size):
        piece = parser.add(text[i : i + size])
        thinking, content, calls = (
            thinking + piece.thinking,
            content + piece.content,
            calls + piece.tool_calls,
        )
    piece = parser.finish()
    return thinking + piece.thinking, content + piece.content, calls + piece.tool_calls


ANSWER = (
    "<|channel|>analysis<|message|>Think <b>first</b>.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer.<|return|>"
)


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_analysis_is_thinking_and_final_is_content(size: int) -> None:
    assert run(ANSWER, size) == ("Think <b>first</b>.", "The answer.", [])


def test_calls_to_functions() -> None:
    text = (
        "<|channel|>analysis<|message|>Call it.<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json"
        '<|message|>{"city": "Oslo"}<|call|>'
    )
    thinking, content, calls = run(text, 2)
    assert (thinking, content) == ("Call it.", "")
    assert [c["function"] for c in calls] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}
    ]


def test_a_call_with_bad_json_is_content() -> None:
    text = "<|channel|>commentary to=functions.f<|message|>{oops<|call|>"
    assert run(text, 4) == ("", "{oops", [])


def test_commentary_without_recipient_is_content() -> None:
    assert run("<|channel|>commentary<|message|>Working on it.<|end|>", 5)[1] == "Working on it."


def test_text_that_is_not_harmony_comes_back() -> None:
    assert run("Just plain words.", 3) == ("", "Just plain words.", [])
    long = "x" * (MAX_HEADER + 10) + " more"
    assert run(long, 50) == ("", long, [])


def test_an_unfinished_message_is_delivered_at_the_end() -> None:
    assert run("<|channel|>analysis<|message|>half a thou", 4) == ("half a thou", "", [])
    assert run("<|channel|>final<|message|>a <|not a token", 4) == ("", "a <|not a token", [])
