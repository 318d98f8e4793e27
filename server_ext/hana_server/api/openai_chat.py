"""Tools and reasoning on `/v1/chat/completions`, mapped onto native chat as Ollama maps them.

In: `tools` pass through; an assistant's `tool_calls` (arguments as a JSON string) become native
calls (arguments as an object); a tool message gets its `tool_name` from `name` or from the
earlier call its `tool_call_id` answers; `reasoning` becomes `thinking`; `reasoning_effort` (or
`reasoning.effort`) becomes `think`. Out: `thinking` is `reasoning`, calls get `type` and their
arguments as a JSON string, `finish_reason` is `tool_calls` when an answer that stopped made
calls. A streamed emission holding reasoning and content or calls is sent as two chunks.
"""

from __future__ import annotations

import json
from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_server.openai_requests import ChatCompletionRequest

# reasoning_effort → think (Ollama's openai/openai.go)
EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def think_of(body: ChatCompletionRequest) -> bool | str | None:
    """The native `think` for a request's reasoning effort (absent: None, thinking as default)."""
    effort = body.reasoning_effort
    if effort is None and body.reasoning is not None:
        effort = body.reasoning.effort
    if effort is None:
        return None
    if effort not in EFFORTS:
        choices = ", ".join(json.dumps(e) for e in EFFORTS)
        raise InvalidRequest(f"invalid reasoning value: {json.dumps(effort)} (must be {choices})")
    return EFFORTS[effort]


def native_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's messages in the native shape."""
    names: dict[str, str] = {}  # tool_call_id → the function it called
    out: list[dict[str, Any]] = []
    for m in body.messages:
        message: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.reasoning:
            message["thinking"] = m.reasoning
        if m.tool_calls:
            message["tool_calls"] = [_native_call(call, i) for i, call in enumerate(m.tool_calls)]
            for call in m.tool_calls:
                if call.id:
                    names[call.id] = call.function.name
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "")
            if name:
                message["tool_name"] = name
            if m.tool_call_id:
                message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def _native_call(call: Any, index: int) -> dict[str, Any]:
    arguments = call.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            raise InvalidRequest("invalid tool call arguments") from None
    if not isinstance(arguments, dict):
        raise InvalidRequest("invalid tool call arguments")
    native: dict[str, Any] = {
        "function": {"index": index, "name": call.function.name, "arguments": arguments}
    }
    if call.id:
        native["id"] = call.id
    return native


def openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native tool calls in OpenAI's shape: arguments as a JSON string."""
    return [
        {
            "id": call.get("id", ""),
            "index": call["function"].get("index", i),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": json.dumps(call["function"]["arguments"], separators=(",", ":")),
            },
        }
        for i, call in enumerate(calls)
    ]


def finish_reason(done_reason: str | None, made_calls: bool) -> str:
    """OpenAI's finish_reason: `tool_calls` replaces `stop` when calls were made."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if made_calls else "stop"


def whole_message(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a non-streamed answer."""
    messages = [c["message"] for c in chunks]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(m.get("content", "") for m in messages),
    }
    if reasoning := "".join(m.get("thinking", "") for m in messages):
        message["reasoning"] = reasoning
    if calls := [call for m in messages for call in m.get("tool_calls", [])]:
        message["tool_calls"] = openai_calls(calls)
    return message


def deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas for one native chunk's message: reasoning apart from content and calls."""
    out: list[dict[str, Any]] = []
    if message.get("thinking"):
        out.append({"content": "", "reasoning": message["thinking"]})
    content, calls = message.get("content", ""), message.get("tool_calls")
    if content or calls or not out:
        delta: dict[str, Any] = {"content": content}
        if calls:
            delta["tool_calls"] = openai_calls(calls)
        out.append(delta)
    return out
