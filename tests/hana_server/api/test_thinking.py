"""Thinking end to end: `think` on templates like real families', thinking text separated from the
content in chunks and whole answers, `think: false`, gpt-oss channels, and Ollama's errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from family_templates import QWEN3, R1
from scripted_runner import Script
from scripted_server import ScriptedServer
from server_harness import file_sha256
from tiny_gguf import write_tiny_gguf

ASK = [{"role": "user", "content": "Why is the sky blue?"}]
THOUGHT = (
    "<think>\nRayleigh scattering, short waves scatter more.</think>\n\nBecause of scattering."
)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def model(server: ScriptedServer, name: str, template: str | None, chunks: list[str]) -> str:
    server.create_tiny(name, **({"template": template} if template else {}))
    server.script(name, Script(chunks=chunks))
    return name


def post(server: ScriptedServer, path: str, **body: Any) -> list[dict[str, Any]]:
    response = server.http.post(path, json=body)
    assert response.status_code == 200, response.text
    return ndjson(response.text)


def last_prompt(server: ScriptedServer, name: str | None = None) -> str:
    path = server.service.store.get(name).model_path if name else None
    return server.launcher.live(path)[0].payloads[-1]["prompt"]


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
@pytest.mark.parametrize("think", [True, "high", None])
def test_thinking_is_separated_whatever_the_chunking(
    scripted_server: ScriptedServer, size: int, think: bool | str | None
) -> None:
    name = model(scripted_server, f"qwen-{size}", QWEN3, pieces(THOUGHT, size))
    body: dict[str, Any] = {"model": name, "messages": ASK}
    if think is not None:
        body["think"] = think  # absent: a thinking model thinks
    lines = post(scripted_server, "/api/chat", **body)
    messages = [line["message"] for line in lines]
    assert "".join(m.get("thinking", "") for m in messages) == (
        "Rayleigh scattering, short waves scatter more."
    )
    assert "".join(m["content"] for m in messages) == "Because of scattering."
    # thinking chunks come first; no chunk is empty
    kinds = ["thinking" if m.get("thinking") else "content" for m in messages[:-1]]
    assert kinds == sorted(kinds, key=lambda kind: kind != "thinking")
    assert all(m.get("thinking") or m["content"] for m in messages[:-1])
    whole = post(scripted_server, "/api/chat", **body, stream=False)[0]["message"]
    assert whole["thinking"] == "Rayleigh scattering, short waves scatter more."
    assert whole["content"] == "Because of scattering."
    assert list(whole) == ["role", "content", "thinking"]


def test_think_false_is_honoured_through_the_template(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["The sky ", "scatters light."])
    whole = post(scripted_server, "/api/chat", model=name, messages=ASK, think=False, stream=False)
    assert whole[0]["message"] == {"role": "assistant", "content": "The sky scatters light."}
    assert last_prompt(scripted_server).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    post(scripted_server, "/api/chat", model=name, messages=ASK, think=True)
    assert last_prompt(scripted_server).endswith("<|im_start|>assistant\n")


def test_with_think_false_tags_the_model_still_writes_stay_content(
    scripted_server: ScriptedServer,
) -> None:
    name = model(scripted_server, "qwen", QWEN3, pieces(THOUGHT, 4))
    whole = post(scripted_server, "/api/chat", model=name, messages=ASK, think=False, stream=False)
    assert whole[0]["message"]["content"] == THOUGHT
    assert "thinking" not in whole[0]["message"]


def test_a_model_that_skips_thinking_answers_in_content(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["  ", "Blue ", "because <think> is a word."])
    whole = post(scripted_server, "/api/chat", model=name, messages=ASK, stream=False)
    assert whole[0]["message"] == {
        "role": "assistant",
        "content": "Blue because <think> is a word.",
    }


def test_a_prompt_that_opens_the_tag_starts_inside_the_thinking(
    scripted_server: ScriptedServer,
) -> None:
    output = "First, light.\nThen air.\n</think>\n\nScattering."
    name = model(scripted_server, "r1", R1, pieces(output, 3))
    lines = post(scripted_server, "/api/generate", model=name, prompt="Why blue?")
    assert last_prompt(scripted_server).endswith("<|Assistant|><think>\n")
    assert "".join(line.get("thinking", "") for line in lines) == "First, light.\nThen air.\n"
    assert "".join(line["response"] for line in lines) == "Scattering."
    whole = post(scripted_server, "/api/generate", model=name, prompt="Why blue?", stream=False)[0]
    assert whole["thinking"] == "First, light.\nThen air.\n"
    assert list(whole)[:4] == ["model", "created_at", "response", "thinking"]


def test_a_thought_never_closed_is_all_thinking(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "qwen", QWEN3, ["<think>", "going on", " and on </th"])
    whole = post(scripted_server, "/api/chat", model=name, messages=ASK, stream=False)[0]
    assert whole["message"]["thinking"] == "going on and on </th"
    assert whole["message"]["content"] == ""


def test_thinking_and_tool_calls_together(scripted_server: ScriptedServer) -> None:
    output = (
        "<think>I need the weather.</think>\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    name = model(scripted_server, "qwen", QWEN3, pieces(output, 6))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    whole = post(
        scripted_server, "/api/chat", model=name, messages=ASK, tools=[tool], stream=False
    )[0]["message"]
    assert whole["thinking"] == "I need the weather."
    assert whole["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }


def test_ollamas_errors_for_think(scripted_server: ScriptedServer) -> None:
    scripted_server.create_tiny("plain")
    cases = [
        ({"think": True}, '"plain" does not support thinking'),
        ({"think": "low"}, '"plain" does not support thinking'),
        (
            {"think": "extreme"},
            'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, '
            "or false)",
        ),
        (
            {"think": 1},
            'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
        ),
    ]
    for extra, message in cases:
        for path, body in (
            ("/api/chat", {"model": "plain", "messages": ASK}),
            ("/api/generate", {"model": "plain", "prompt": "x"}),
        ):
            response = scripted_server.http.post(path, json={**body, **extra})
            assert response.status_code == 400, (path, extra)
            assert response.json() == {"error": message}
    # think false on a model that cannot think is fine
    post(scripted_server, "/api/chat", model="plain", messages=ASK, think=False)


def test_capabilities_in_show_and_tags(scripted_server: ScriptedServer) -> None:
    model(scripted_server, "qwen", QWEN3, ["x"])
    model(scripted_server, "r1", R1, ["x"])
    model(scripted_server, "plain", None, ["x"])
    shown = {
        name: scripted_server.http.post("/api/show", json={"model": name}).json()["capabilities"]
        for name in ("qwen", "r1", "plain")
    }
    assert shown == {
        "qwen": ["completion", "tools", "thinking"],
        "r1": ["completion", "thinking"],
        "plain": ["completion"],
    }
    tags = {
        m["name"]: m["capabilities"] for m in scripted_server.http.get("/api/tags").json()["models"]
    }
    assert tags == {f"{name}:latest": caps for name, caps in shown.items()}


def test_a_gguf_jinja_template_gives_thinking_and_tools(scripted_server: ScriptedServer) -> None:
    jinja = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if tools %}{{ tools | tojson }}{% endif %}<|assistant|>"
        "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
    )
    path = write_tiny_gguf(scripted_server.root / "jinja.gguf", seed=7, chat_template=jinja)
    create_from_file(scripted_server, "jinja", path)
    scripted_server.script("jinja", Script(chunks=pieces(THOUGHT, 3)))
    shown = scripted_server.http.post("/api/show", json={"model": "jinja"}).json()
    assert shown["capabilities"] == ["completion", "tools", "thinking"]
    whole = post(scripted_server, "/api/chat", model="jinja", messages=ASK, stream=False)[0]
    assert whole["message"]["thinking"] == "Rayleigh scattering, short waves scatter more."
    assert whole["message"]["content"] == "Because of scattering."


def create_from_file(server: ScriptedServer, name: str, path: Path, **fields: Any) -> None:
    digest = "sha256:" + file_sha256(path)
    server.http.post(f"/api/blobs/{digest}", content=path.read_bytes()).raise_for_status()
    body = {"model": name, "files": {path.name: digest}, "stream": False, **fields}
    response = server.http.post("/api/create", json=body)
    assert response.status_code == 200, response.text


def write_header(path: Path, architecture: str) -> Path:
    """A GGUF of `architecture` (never run: the runner is scripted)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(4096)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor("token_embd.weight", np.zeros((8, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


HARMONY = (
    "<|channel|>analysis<|message|>User wants weather. Call the tool.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Oslo"}<|call|>'
)


@pytest.mark.parametrize("think", [True, False, "high"])
def test_gpt_oss_channels_give_thinking_and_calls(
    scripted_server: ScriptedServer, think: bool | str
) -> None:
    create_from_file(
        scripted_server,
        "gpt-oss",
        write_header(scripted_server.root / "gptoss.gguf", "gptoss"),
        template="{{ .Tools }}{{ range .Messages }}{{ .Content }}{{ end }}<|start|>assistant",
    )
    scripted_server.script("gpt-oss", Script(chunks=pieces(HARMONY, 4)))
    shown = scripted_server.http.post("/api/show", json={"model": "gpt-oss"}).json()
    assert "thinking" in shown["capabilities"]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    # gpt-oss cannot stop thinking: think false still gets the analysis channel as thinking
    whole = post(
        scripted_server,
        "/api/chat",
        model="gpt-oss",
        messages=ASK,
        tools=[tool],
        think=think,
        stream=False,
    )[0]["message"]
    assert whole["thinking"] == "User wants weather. Call the tool."
    assert whole["content"] == ""
    assert [c["function"] for c in whole["tool_calls"]] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}
    ]


def test_old_thoughts_are_dropped_from_history_for_qwen3(scripted_server: ScriptedServer) -> None:
    path = write_header(scripted_server.root / "qwen3.gguf", "qwen3")
    create_from_file(scripted_server, "qwen3", path, template=QWEN3)
    scripted_server.script("qwen3", Script(chunks=["ok"]))
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "<think>old thought</think>\n\nFirst answer."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "<think>kept</think>prefill"},
    ]
    post(scripted_server, "/api/chat", model="qwen3", messages=history, think=False)
    prompt = last_prompt(scripted_server)
    assert "old thought" not in prompt and "First answer." in prompt
    assert "<think>kept</think>prefill" in prompt  # after the last user message: kept
    # another family keeps what the client sent
    model(scripted_server, "qwen-like", QWEN3, ["ok"])
    post(scripted_server, "/api/chat", model="qwen-like", messages=history, think=False)
    assert "old thought" in last_prompt(scripted_server, "qwen-like")


def test_a_raw_prompt_is_parsed_with_the_models_tags(scripted_server: ScriptedServer) -> None:
    name = model(scripted_server, "r1", R1, ["I think", "</think>", "Answer."])
    raw = {"model": name, "prompt": "<|User|>hi<|Assistant|><think>\n", "raw": True}
    whole = post(scripted_server, "/api/generate", **raw, stream=False)[0]
    assert (whole["thinking"], whole["response"]) == ("I think", "Answer.")
    assert last_prompt(scripted_server) == raw["prompt"]
    off = post(scripted_server, "/api/generate", **raw, think=False, stream=False)[0]
    assert off["response"] == "I think</think>Answer." and "thinking" not in off
