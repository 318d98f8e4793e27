"""The pure parts of remote models: Ollama's host rules, the allow-list, and the OpenAI
translation both ways on answer shapes vLLM and LiteLLM send (which the loopback servers do not:
reasoning fields, tool-call fragments, usage chunks, vLLM's error shape)."""

from __future__ import annotations

import asyncio
import time

import pytest
from hana_server.remote.gate import UpstreamGate
from hana_server.remote.openai_upstream import (
    Translation,
    openai_message,
    response_format,
    sampling_fields,
    think_fields,
)
from hana_server.remote.spec import allowed_hosts, checked_spec, normalise_host
from hana_server.remote.transport import upstream_message

from hana_protocol.errors import HanaError, InvalidRequest


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/proxy", "http://localhost:11434/proxy"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080/", "http://gpu-box:8080"),
        ("https://gpu-box", "https://gpu-box:11434"),
        ("ollama.com", "https://ollama.com:443"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_hosts_normalise_as_ollama(given: str, expected: str) -> None:
    assert normalise_host(given) == expected


def test_openai_base_urls_keep_their_port_and_path() -> None:
    assert normalise_host("https://api.example.com/v1", "openai") == "https://api.example.com/v1"
    for bad in ("", "ftp://x", "http://user:pw@h", "http://h/?key=1", "http://"):
        with pytest.raises(InvalidRequest, match="bad remote"):
            normalise_host(bad)


def test_allow_list_defaults_to_ollama_com() -> None:
    assert allowed_hosts(None) == {"ollama.com"}
    assert allowed_hosts(" a.example , B.example,") == {"a.example", "b.example"}
    spec = checked_spec("http://gpu:1", "m", None, None)
    spec.check_allowed({"gpu"})
    with pytest.raises(InvalidRequest, match="cannot run this remote model"):
        spec.check_allowed({"ollama.com"})


def test_cloud_suffix_and_key_names() -> None:
    spec = checked_spec(None, "gpt-oss:20b-cloud", None, None)
    assert (spec.host, spec.model) == ("https://ollama.com:443", "gpt-oss:20b")
    assert checked_spec(None, "x:cloud", None, None).model == "x"
    with pytest.raises(InvalidRequest):
        checked_spec("h", "m", "grpc", None)
    with pytest.raises(InvalidRequest, match="API_KEY"):
        checked_spec("h", "m", "openai", "AWS_SECRET_ACCESS_KEY")
    assert checked_spec("h", "m", "openai", "VLLM_API_KEY").key_env == "VLLM_API_KEY"


def test_request_translation() -> None:
    fields = sampling_fields(
        {"num_predict": 5, "temperature": 0.2, "top_k": 3, "repeat_penalty": 1.1, "stop": "x"}
    )
    assert fields == {
        "temperature": 0.2,
        "top_k": 3,
        "max_tokens": 5,
        "stop": ["x"],
        "repetition_penalty": 1.1,
    }
    assert "max_tokens" not in sampling_fields({"num_predict": -1})
    assert response_format("json") == {"type": "json_object"}
    schema = {"type": "object"}
    assert response_format(schema) == {
        "type": "json_schema",
        "json_schema": {"name": "schema", "schema": schema},
    }
    assert think_fields(False) == {"chat_template_kwargs": {"enable_thinking": False}}
    assert think_fields("high") == {"reasoning_effort": "high"}
    message = openai_message(
        {
            "role": "assistant",
            "content": "",
            "thinking": "hidden",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
        }
    )
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert "thinking" not in message
    tool = openai_message({"role": "tool", "content": "3", "tool_name": "f"})
    assert tool["name"] == "f"


def test_stream_translation_folds_tools_reasoning_and_usage() -> None:
    t = Translation(chat=True, started=time.monotonic())
    events = [
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"reasoning": "hmm"}}]},
        {"choices": [{"delta": {"reasoning_content": " ok"}}]},
        {"choices": [{"delta": {"content": "Hi"}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": "get", "arguments": '{"ci'},
                            }
                        ]
                    }
                }
            ]
        },
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
    ]
    chunks = [c for c in (t.choice(e) for e in events) if c]
    assert [c["message"].get("thinking") for c in chunks[:2]] == ["hmm", " ok"]
    assert chunks[2]["message"]["content"] == "Hi"
    final = t.final()
    assert final["done_reason"] == "stop"
    assert final["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "get", "arguments": {"city": "Oslo"}}}
    ]
    assert final["prompt_eval_count"] == 11 and final["eval_count"] == 7


def test_llama_server_timings_and_length() -> None:
    t = Translation(chat=False, started=time.monotonic())
    t.choice(
        {
            "choices": [{"text": "ab", "finish_reason": "length"}],
            "timings": {"cache_n": 4, "prompt_n": 6, "prompt_ms": 12.5, "predicted_ms": 40.0},
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }
    )
    final = t.final("ab")
    assert final["response"] == "ab" and final["done_reason"] == "length"
    assert final["prompt_eval_count"] == 10
    assert final["prompt_eval_duration"] == 12_500_000 and final["eval_duration"] == 40_000_000


def test_invalid_tool_arguments_are_an_error() -> None:
    t = Translation(chat=True, started=time.monotonic())
    t.choice(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "f", "arguments": "{not json"}}
                        ]
                    }
                }
            ]
        }
    )
    with pytest.raises(HanaError, match="invalid tool call arguments"):
        t.final()


def test_upstream_error_messages() -> None:
    assert upstream_message(b'{"error": "model \'x\' not found"}') == "model 'x' not found"
    assert upstream_message(b'{"error": {"message": "bad key", "type": "auth"}}') == "bad key"
    assert upstream_message(b'{"object": "error", "message": "vllm says no"}') == "vllm says no"
    assert upstream_message(b'{"detail": "Invalid API Key"}') == "Invalid API Key"
    assert upstream_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


async def test_gate_queues_in_order_and_refuses_past_the_queue() -> None:
    changes: list[int] = []
    gate = UpstreamGate("h", limit=1, max_queue=1, changed=lambda: changes.append(1))
    first = await gate.acquire("a")
    waiting = asyncio.ensure_future(gate.acquire("b"))
    await asyncio.sleep(0)
    assert gate.queued("b") == 1 and gate.in_flight == 1
    with pytest.raises(HanaError, match="server busy"):
        await gate.acquire("c")
    first.release()
    first.release()  # idempotent
    second = await waiting
    assert gate.active == {"b": 1} and gate.queued() == 0
    # A waiter that gives up leaves nothing behind.
    third = asyncio.ensure_future(gate.acquire("c"))
    await asyncio.sleep(0)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    second.release()
    assert gate.in_flight == 0 and gate.queued() == 0 and changes
