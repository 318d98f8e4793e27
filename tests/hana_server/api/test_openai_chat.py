"""The /v1 mapping of tools and reasoning (api/openai_chat.py), unit by unit."""

from __future__ import annotations

import pytest
from hana_server.api.openai_chat import deltas, finish_reason, native_messages, think_of
from hana_server.openai_requests import ChatCompletionRequest

from hana_protocol.errors import InvalidRequest

CALL = {"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}
OPENAI_CALL = {
    "id": "call_1",
    "index": 0,
    "type": "function",
    "function": {"name": "f", "arguments": '{"a":1}'},
}


def request(**body: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    )


def test_an_emission_with_reasoning_and_content_or_calls_is_two_deltas() -> None:
    assert deltas({"content": "a", "thinking": "t"}) == [
        {"content": "", "reasoning": "t"},
        {"content": "a"},
    ]
    assert deltas({"content": "", "thinking": "t", "tool_calls": [CALL]}) == [
        {"content": "", "reasoning": "t"},
        {"content": "", "tool_calls": [OPENAI_CALL]},
    ]
    assert deltas({"content": "", "thinking": "t"}) == [{"content": "", "reasoning": "t"}]
    assert deltas({"content": "a"}) == [{"content": "a"}]
    assert deltas({"content": ""}) == [{"content": ""}]


def test_finish_reason() -> None:
    assert finish_reason("stop", True) == "tool_calls"
    assert finish_reason("stop", False) == "stop"
    assert finish_reason("length", True) == "length"


@pytest.mark.parametrize(
    ("body", "think"),
    [
        ({}, None),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "medium"}, "medium"),
        ({"reasoning": {"effort": "ultra"}}, "max"),
        ({"reasoning_effort": "high", "reasoning": {"effort": "low"}}, "high"),
        ({"think": True}, None),  # a think key on /v1 is ignored, as Ollama ignores it
    ],
)
def test_reasoning_effort(body: dict, think: object) -> None:
    assert think_of(request(**body)) == think


def test_unknown_effort_is_refused() -> None:
    with pytest.raises(InvalidRequest, match='invalid reasoning value: "turbo"'):
        think_of(request(reasoning_effort="turbo"))


def test_messages_map_calls_reasoning_and_tool_names() -> None:
    body = request(
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "reasoning": "r",
                "tool_calls": [OPENAI_CALL, {"function": {"name": "g", "arguments": ""}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "1"},
            {"role": "tool", "name": "g", "content": "2"},
            {"role": "tool", "tool_call_id": "unknown", "content": "3"},
        ]
    )
    assert native_messages(body)[1:] == [
        {
            "role": "assistant",
            "content": "",
            "thinking": "r",
            "tool_calls": [
                {"function": {"index": 0, "name": "f", "arguments": {"a": 1}}, "id": "call_1"},
                {"function": {"index": 1, "name": "g", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "1", "tool_name": "f", "tool_call_id": "call_1"},
        {"role": "tool", "content": "2", "tool_name": "g"},
        {"role": "tool", "content": "3", "tool_call_id": "unknown"},
    ]


@pytest.mark.parametrize("arguments", ["{bad", "[1]", '"s"', "{" * 5000])
def test_bad_arguments_are_refused(arguments: str) -> None:
    body = request(
        messages=[
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "f", "arguments": arguments}}],
            }
        ]
    )
    with pytest.raises(InvalidRequest, match="invalid tool call arguments"):
        native_messages(body)
