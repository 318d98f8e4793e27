"""The official `ollama` and `openai` clients' tool-calling and reasoning flows, against the real
HTTP app with a scripted runner; and /v1 tool calls and reasoning in raw requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from family_templates import LLAMA31, QWEN3
from scripted_runner import Script
from scripted_server import ScriptedServer

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
THOUGHT = "<think>The user wants weather.</think>\n\n"


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The name of the city

    Returns:
      str: The weather
    """
    return f"22 degrees and sunny in {city}"


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.fixture
def ollama_client(qwen: ScriptedServer) -> Iterator[ollama.Client]:
    client = ollama.Client(host=qwen.url)
    yield client
    client.close()


@pytest.fixture
def openai_client(qwen: ScriptedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=qwen.url + "/v1", api_key="hana") as client:
        yield client


@pytest.fixture
def qwen(scripted_server: ScriptedServer) -> ScriptedServer:
    scripted_server.create_tiny("qwen", template=QWEN3)
    scripted_server.script("qwen", Script(chunks=pieces(THOUGHT + CALL, 5)))
    return scripted_server


def answer_next(server: ScriptedServer, text: str) -> None:
    """The loaded runner says `text` from its next request on."""
    (runner,) = server.launcher.live()
    runner.script = Script(chunks=pieces(text, 4))


def last_prompt(server: ScriptedServer) -> str:
    return server.launcher.live()[0].payloads[-1]["prompt"]


def test_ollama_client_tool_flow(qwen: ScriptedServer, ollama_client: ollama.Client) -> None:
    client = ollama_client
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = client.chat(model="qwen", messages=messages, tools=[get_weather])
    assert response.message.thinking == "The user wants weather."
    (call,) = response.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}
    result = {"get_weather": get_weather}[call.function.name](**call.function.arguments)

    messages.append(response.message)
    messages.append({"role": "tool", "content": result, "tool_name": call.function.name})
    answer_next(qwen, "<think>Got it.</think>It is 22 degrees and sunny.")
    final = client.chat(model="qwen", messages=messages, tools=[get_weather])
    assert final.message.content == "It is 22 degrees and sunny."
    assert not final.message.tool_calls
    prompt = last_prompt(qwen)
    assert '{"name": "get_weather", "arguments": {"city":"Paris"}}' in prompt  # the call, back
    assert "<tool_response>\n22 degrees and sunny in Paris\n</tool_response>" in prompt
    assert '"description":"Get the current weather in a city."' in prompt  # the tool schema


def test_ollama_client_streams_thinking_then_the_call(ollama_client: ollama.Client) -> None:
    client = ollama_client
    parts = list(
        client.chat(
            model="qwen",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[get_weather],
            think=True,
            stream=True,
        )
    )
    thinking = "".join(p.message.thinking or "" for p in parts)
    calls = [c for p in parts for c in p.message.tool_calls or []]
    assert thinking == "The user wants weather."
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert "".join(p.message.content or "" for p in parts) == ""


def test_openai_client_tool_flow(qwen: ScriptedServer, openai_client: openai.OpenAI) -> None:
    client = openai_client
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    completion = client.chat.completions.create(model="qwen", messages=messages, tools=tools)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.model_extra.get("reasoning") == "The user wants weather."

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "22 degrees"})
    answer_next(qwen, "It is 22 degrees.")
    final = client.chat.completions.create(model="qwen", messages=messages, tools=tools)
    assert final.choices[0].message.content == "It is 22 degrees."
    assert final.choices[0].finish_reason == "stop"
    prompt = last_prompt(qwen)
    assert '{"name": "get_weather", "arguments": {"city":"Paris"}}' in prompt
    assert "<tool_response>\n22 degrees\n</tool_response>" in prompt


def test_openai_client_streams_reasoning_and_calls(openai_client: openai.OpenAI) -> None:
    client = openai_client
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    stream = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=tools,
        stream=True,
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas)
    assert reasoning == "The user wants weather."
    calls = [call for d in deltas for call in d.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def v1(server: ScriptedServer, **body: Any) -> Any:
    return server.http.post("/v1/chat/completions", json={"model": "qwen", **body})


def test_reasoning_effort_maps_to_think(qwen: ScriptedServer) -> None:
    answer = v1(qwen, messages=[{"role": "user", "content": "hi"}], reasoning_effort="none")
    assert answer.status_code == 200
    # think false: the template pre-fills an empty thought, and tags the model writes stay text
    assert last_prompt(qwen).endswith("<think>\n\n</think>\n\n")
    message = answer.json()["choices"][0]["message"]
    assert "reasoning" not in message and message["content"].startswith("<think>")
    for effort in ("minimal", "high", "xhigh"):
        body = {"messages": [{"role": "user", "content": "hi"}], "reasoning": {"effort": effort}}
        assert v1(qwen, **body).json()["choices"][0]["message"]["reasoning"]
    bad = v1(qwen, messages=[{"role": "user", "content": "hi"}], reasoning_effort="lots")
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith('invalid reasoning value: "lots" (must be')


def test_v1_history_maps_calls_reasoning_and_tool_names(qwen: ScriptedServer) -> None:
    qwen.script("qwen", Script(chunks=["Done."]))
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning": "Need a tool.",
            "tool_calls": [
                {
                    "id": "call_x1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_x1", "content": "hot"},
    ]
    answer = v1(
        qwen, messages=history, tools=[{"type": "function", "function": {"name": "get_weather"}}]
    )
    assert answer.status_code == 200, answer.text
    prompt = last_prompt(qwen)
    assert '{"name": "get_weather", "arguments": {"city":"Rome"}}' in prompt
    assert "<tool_response>\nhot\n</tool_response>" in prompt
    history[1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    bad = v1(qwen, messages=history)
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "invalid tool call arguments"


def test_llama_bare_json_call_on_v1(scripted_server: ScriptedServer) -> None:
    scripted_server.create_tiny("llama", template=LLAMA31)
    scripted_server.script(
        "llama", Script(chunks=pieces('{"name": "get_weather", "parameters": {"city": "Oslo"}}', 3))
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = {"model": "llama", "messages": [{"role": "user", "content": "w?"}], "tools": tools}
    answer = scripted_server.http.post("/v1/chat/completions", json=body).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == ""
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
