"""ToolCallParser: template-derived tags, bare JSON, parallel calls, split input, bad and hostile
input (huge, never closed, nested without end): bounded cost, text returned, never an error."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hana_server.parsers.jsonscan import MAX_DEPTH
from hana_server.parsers.toolcalls import ToolCallParser, call_from, new_call_id

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
    {"type": "function", "function": {"name": "get_weather_now", "parameters": {}}},
    {"type": "function", "function": {"name": "get_time"}},
]


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter):08d}"


def run(tag: str, chunks: list[str]) -> tuple[str, list[tuple[str, dict[str, Any], int]]]:
    parser = ToolCallParser(TOOLS, tag, make_id=ids())
    content, calls = "", []
    for chunk in chunks:
        text, found = parser.add(chunk)
        content += text
        calls += found
    text, found = parser.finish()
    calls += found
    return content + text, [
        (c["function"]["name"], c["function"]["arguments"], c["function"]["index"]) for c in calls
    ]


def split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


QWEN = (
    'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
    '"note": "a } and a \\" inside"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", '
    '"arguments": {}}\n</tool_call>\nTrailing prose is dropped.'
)


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_tagged_parallel_calls_split_anywhere(size: int) -> None:
    assert run("<tool_call>", split(QWEN, size)) == (
        "Checking. ",
        [
            ("get_weather", {"city": "Paris", "note": 'a } and a " inside'}, 0),
            ("get_time", {}, 1),
        ],
    )


def test_content_before_the_tag_streams_holding_only_a_possible_tag() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>")
    assert parser.add("Hello <tool") == ("Hello ", [])
    assert parser.add("box> world") == ("<toolbox> world", [])


@pytest.mark.parametrize(
    "output",
    [
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        ' \n<|python_tag|>{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}',
        '{"get_weather": {"city": "Oslo"}}',
        '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
    ],
)
def test_bare_json_call_shapes(output: str) -> None:
    for size in (1, 3, 100):
        assert run("{", split(output, size)) == ("", [("get_weather", {"city": "Oslo"}, 0)])


def test_bare_json_parallel_calls_then_prose() -> None:
    output = '{"name": "get_time", "parameters": {}};\n{"name": "get_weather", "parameters": {}} ok'
    assert run("{", split(output, 4)) == ("ok", [("get_time", {}, 0), ("get_weather", {}, 1)])


def test_bare_json_array_tag() -> None:
    output = '[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {}}]'
    assert run("[", split(output, 3)) == ("", [("get_time", {}, 0), ("get_weather", {}, 1)])


@pytest.mark.parametrize(
    "output",
    [
        "Plain answer { with braces }",
        '{"answer": 42}',  # JSON, but not a call
        '{"name": "unknown_tool", "parameters": {}}',
        '{"name": "get_weather", "parameters": [1]}',
        '{"name": "get_weather", "parameters": {"city": "Os',  # truncated
        '{"name": get_weather}',  # not JSON
    ],
)
def test_bare_json_that_is_no_call_is_content(output: str) -> None:
    assert run("{", split(output, 2)) == (output, [])


@pytest.mark.parametrize(
    "output",
    [
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Par',
        '[TOOL_CALLS] [{"name": "nope", "arguments": {}}]',
        "[TOOL_CALLS] [{name: get_weather}]",
        "[TOOL_CALLS] never any JSON",
    ],
)
def test_tagged_text_that_is_no_call_comes_back_whole(output: str) -> None:
    assert run("[TOOL_CALLS] [", split(output, 3)) == (output, [])


def test_longest_name_wins_and_names_before_the_json_count() -> None:
    output = '[TOOL_CALLS]get_weather_now[ARGS]{"city": "Oslo"}'
    assert run("[TOOL_CALLS]", split(output, 4)) == (
        "",
        [("get_weather_now", {"city": "Oslo"}, 0)],
    )


def test_a_malformed_call_between_good_ones_is_skipped() -> None:
    output = (
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
        "<tool_call>{broken}</tool_call>"
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    )
    assert run("<tool_call>", split(output, 5)) == (
        "",
        [("get_time", {}, 0), ("get_weather", {}, 1)],
    )


def test_call_ids_look_like_ollamas() -> None:
    pattern = re.compile(r"^call_[a-z0-9]{8}$")
    assert all(pattern.match(new_call_id()) for _ in range(50))
    parser = ToolCallParser(TOOLS, "{")
    _, calls = parser.add('{"name": "get_time", "arguments": {}}')
    assert calls[0]["id"].startswith("call_") and list(calls[0]) == ["id", "function"]


def test_call_from_rejects_what_is_not_a_call() -> None:
    names = ["f"]
    assert call_from([1], names) is None
    assert call_from({"name": 3}, names) is None
    assert call_from({"name": "f", "arguments": "not json"}, names) is None
    assert call_from({"name": "f"}, names) == ("f", {})
    assert call_from({"x": 1}, names, before="call f with") == ("f", {"x": 1})


# ------------------------------------------------------------------ hostile input


def test_deeply_nested_json_is_refused_cheaply() -> None:
    deep = '{"name": "get_weather", "arguments": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001
    assert run("{", split(deep, 4096)) == (deep, [])
    tagged = "<tool_call>" + deep
    assert run("<tool_call>", split(tagged, 4096)) == (tagged, [])
    # just inside the limit still parses
    ok = (
        '{"name": "get_weather", "arguments": '
        + '{"a": ' * (MAX_DEPTH - 2)
        + "1"
        + "}" * (MAX_DEPTH - 1)
    )
    assert run("{", [ok])[1][0][0] == "get_weather"


def test_a_huge_never_closed_call_is_scanned_once() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>")
    parser.add('<tool_call>{"name": "get_weather", "arguments": {"text": "')
    for _ in range(5_000):  # 1 MB inside a string that never ends
        assert parser.add("x{[" * 70) == ("", [])
    assert parser._scanner is not None and parser._scanner.depth == 2  # brackets in a string
    content, calls = parser.finish()
    assert calls == [] and content.startswith("<tool_call>{") and len(content) > 1_000_000


def test_garbage_never_raises() -> None:
    samples = ['"', "\\", "}", "]", "{]", "[}", '{"a":"\\', "\x00", "{" * 300, "}" * 300]
    for tag in ("{", "[", "<tool_call>", "[TOOL_CALLS] ["):
        for combo in itertools.product(samples, repeat=2):
            text = tag + "".join(combo)
            content, calls = run(tag, split(text, 3))
            assert calls == [] and content == text


def test_arguments_keep_their_values() -> None:
    args = {"n": 1, "f": 1.5, "b": True, "none": None, "list": [1, "a"], "o": {"k": "v"}}
    output = "<tool_call>" + json.dumps({"name": "get_weather", "arguments": args})
    assert run("<tool_call>", [output])[1] == [("get_weather", args, 0)]
