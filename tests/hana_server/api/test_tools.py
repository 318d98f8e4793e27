"""Tool calls end to end: templates like real families', a scripted runner saying chosen text, and
what /api/chat returns (single, parallel, streamed, split across chunks, malformed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from family_templates import LLAMA31, MISTRAL, QWEN3, command_r
from scripted_runner import Script
from scripted_server import ScriptedServer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL_ID = re.compile(r"^call_[a-z0-9]{8}$")


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def model(server: ScriptedServer, name: str, template: str, chunks: list[str]) -> str:
    server.create_tiny(name, template=template)
    server.script(name, Script(chunks=chunks))
    return name


def chat(server: ScriptedServer, name: str, **body: Any) -> dict[str, Any]:
    body = {"model": name, "messages": ASK, "tools": [WEATHER, TIME], "stream": False, **body}
    response = server.http.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def calls_of(message: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    found = []
    for call in message.get("tool_calls", []):
        assert CALL_ID.match(call["id"])
        function = call["function"]
        found.append((function["name"], function["arguments"], function["index"]))
    return found


QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
FAMILIES = {
    "llama": (LLAMA31, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    "llama-python-tag": (
        LLAMA31,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    ),
    "qwen": (QWEN3, "<think>\nweather needed</think>\n\n" + QWEN_CALL),
    "mistral": (
        MISTRAL,
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("size", [1, 7, 1000])
def test_a_single_call_is_found_whatever_the_chunking(
    scripted_server: ScriptedServer, family: str, size: int
) -> None:
    template, output = FAMILIES[family]
    name = model(scripted_server, f"{family}-{size}", template, pieces(output, size))
    reply = chat(scripted_server, name)
    message = reply["message"]
    assert calls_of(message) == [("get_weather", {"city": "Paris"}, 0)]
    assert message["content"] == ""
    assert reply["done_reason"] == "stop"


def test_the_tools_reach_the_prompt_through_the_template(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["Hi"])
    chat(scripted_server, name)
    prompt = scripted_server.launcher.live()[0].payloads[-1]["prompt"]
    assert '{"type": "function", "function": {"name":"get_weather",' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_command_r_calls_are_found_with_its_own_template(scripted_server: ScriptedServer) -> None:
    template = command_r()
    if template is None:
        pytest.skip("the conformance templates are not on this machine")
    output = (
        'Action: ```json\n[\n    {\n        "tool_name": "get_weather",\n'
        '        "parameters": {"city": "Paris"}\n    },\n    {\n'
        '        "tool_name": "get_time",\n        "parameters": {}\n    }\n]```'
    )
    name = model(scripted_server, "command-r", template, pieces(output, 5))
    message = chat(scripted_server, name)["message"]
    assert calls_of(message) == [("get_weather", {"city": "Paris"}, 0), ("get_time", {}, 1)]
    prompt = scripted_server.launcher.live()[0].payloads[-1]["prompt"]
    assert "def get_weather(city: string, ) -> List[Dict]:" in prompt


def test_parallel_calls_are_numbered_in_order(scripted_server: ScriptedServer) -> None:
    output = (
        QWEN_CALL + '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
        '\n<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
        "\n</tool_call>"
    )
    name = model(scripted_server, "qwen", QWEN3, pieces(output, 4))
    message = chat(scripted_server, name, think=False)["message"]
    assert calls_of(message) == [
        ("get_weather", {"city": "Paris"}, 0),
        ("get_time", {}, 1),
        ("get_weather", {"city": "Rome"}, 2),
    ]
    ids = [call["id"] for call in message["tool_calls"]]
    assert len(set(ids)) == 3


def test_llama_parallel_bare_json_calls(scripted_server: ScriptedServer) -> None:
    output = (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {}}'
    )
    name = model(scripted_server, "llama", LLAMA31, pieces(output, 3))
    message = chat(scripted_server, name)["message"]
    assert calls_of(message) == [("get_weather", {"city": "Paris"}, 0), ("get_time", {}, 1)]


def test_streamed_calls_come_whole_in_the_chunk_where_they_close(
    scripted_server: ScriptedServer,
) -> None:
    output = "Let me check. " + QWEN_CALL
    name = model(scripted_server, "qwen", QWEN3, pieces(output, 3))
    response = scripted_server.http.post(
        "/api/chat",
        json={"model": name, "messages": ASK, "tools": [WEATHER], "think": False},
    )
    lines = ndjson(response.text)
    content = "".join(line["message"]["content"] for line in lines)
    assert content == "Let me check. "  # nothing of the tag or the JSON leaks
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"]
    assert with_calls[0]["message"]["content"] == ""
    assert calls_of(with_calls[0]["message"]) == [("get_weather", {"city": "Paris"}, 0)]
    # content was not held back before the tag could start: it streamed in several chunks
    assert len([line for line in lines if line["message"]["content"]]) >= 4
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop"


@pytest.mark.parametrize(
    ("template", "output"),
    [
        (QWEN3, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'),  # truncated
        (QWEN3, '<tool_call>\n{"name": "get_weather", "arguments": {city: Paris}}\n</tool_call>'),
        (QWEN3, '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'),  # unknown
        (MISTRAL, '[TOOL_CALLS] [{"name": "get_weather", "arguments": ["x"]}]'),
    ],
)
def test_a_malformed_call_is_returned_as_text_never_an_error(
    scripted_server: ScriptedServer, template: str, output: str
) -> None:
    name = model(scripted_server, "broken", template, pieces(output, 6))
    for stream in (False, True):
        response = scripted_server.http.post(
            "/api/chat",
            json={
                "model": name,
                "messages": ASK,
                "tools": [WEATHER],
                "think": False,
                "stream": stream,
            },
        )
        assert response.status_code == 200
        lines = ndjson(response.text)
        assert all("error" not in line for line in lines)
        assert "".join(line["message"]["content"] for line in lines) == output
        assert not any(line["message"].get("tool_calls") for line in lines)


def test_plain_answers_and_json_answers_stay_content(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "llama", LLAMA31, ['{"answer":', " 42}", " done"])
    message = chat(scripted_server, name)["message"]
    assert message["content"] == '{"answer": 42} done'
    assert "tool_calls" not in message


def test_without_tools_in_the_request_calls_are_not_parsed(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "qwen", QWEN3, pieces(QWEN_CALL, 5))
    message = chat(scripted_server, name, tools=None, think=False)["message"]
    assert message["content"] == QWEN_CALL and "tool_calls" not in message


def test_history_with_calls_and_tool_results_is_rendered_back(
    scripted_server: ScriptedServer,
) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["It is sunny."])
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_abcd1234",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {
            "role": "tool",
            "content": "22 degrees, sunny",
            "tool_name": "get_weather",
            "tool_call_id": "call_abcd1234",
        },
    ]
    reply = chat(scripted_server, name, messages=messages, think=False)
    assert reply["message"]["content"] == "It is sunny."
    prompt = scripted_server.launcher.live()[0].payloads[-1]["prompt"]
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call>'
        in prompt
    )
    assert "<tool_response>\n22 degrees, sunny\n</tool_response>" in prompt


def test_tools_on_a_model_without_them_get_ollamas_message(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.create_tiny("plain")
    response = scripted_server.http.post(
        "/api/chat", json={"model": "plain", "messages": ASK, "tools": [WEATHER]}
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "registry.ollama.ai/library/plain:latest does not support tools"
    }


@pytest.mark.parametrize(
    ("tools", "where"),
    [
        ([5], "tools[0] must be an object"),
        ([{"function": 5}], "tools[0].function must be an object"),
        ([{"function": {"name": 5}}], "tools[0].function.name must be a string"),
        ([{"function": {"name": "f", "parameters": []}}], "parameters must be an object"),
        (
            [{"function": {"name": "f", "parameters": {"properties": {"a": {"type": 3}}}}}],
            "properties.a.type must be a string or strings",
        ),
        (
            [{"function": {"name": "f", "parameters": {"required": [1]}}}],
            "required must hold strings",
        ),
    ],
)
def test_malformed_tools_are_400_on_both_apis(
    scripted_server: ScriptedServer, tools: list[Any], where: str
) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["x"])
    native = scripted_server.http.post(
        "/api/chat", json={"model": name, "messages": ASK, "tools": tools}
    )
    assert native.status_code == 400 and where in native.json()["error"]
    v1 = scripted_server.http.post(
        "/v1/chat/completions", json={"model": name, "messages": ASK, "tools": tools}
    )
    assert v1.status_code == 400 and where in v1.json()["error"]["message"]


def test_tool_properties_nested_deep_are_checked_without_recursion(
    scripted_server: ScriptedServer,
) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["x"])
    prop: dict[str, Any] = {"type": "string"}
    for _ in range(400):
        prop = {"type": "object", "properties": {"p": prop}}
    tool = {"type": "function", "function": {"name": "f", "parameters": prop}}
    response = scripted_server.http.post(
        "/api/chat", json={"model": name, "messages": ASK, "tools": [tool], "stream": False}
    )
    assert response.status_code in (200, 400), response.text
