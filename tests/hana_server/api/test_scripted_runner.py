"""The real API over scripted runners: a test chooses what the runner says and checks what a client
gets (chunks, metrics, errors, state JSON) through real HTTP, with no model process."""

from __future__ import annotations

import json
import threading

from scripted_runner import Gate, Script
from scripted_server import ScriptedServer
from server_harness import wait_for

PS_FIELDS = {
    "name",
    "model",
    "size",
    "digest",
    "details",
    "expires_at",
    "size_vram",
    "context_length",
    "state",
    "in_flight",
    "queued",
    "num_parallel",
    "pid",
    "port",
    "threads",
    "gpu_layers",
    "load_progress",
    "keep_alive",
    "tokens_per_second",
}


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_chat_streams_the_scripted_chunks_and_final_metrics(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    server.script(
        "tiny", Script(chunks=["<think>", "hm", "</think>", "Hi!"], metrics={"eval_count": 7})
    )
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}]}
    lines = ndjson(server.http.post("/api/chat", json=body).text)
    assert [line["message"]["content"] for line in lines[:-1]] == [
        "<think>",
        "hm",
        "</think>",
        "Hi!",
    ]
    final = lines[-1]
    assert final["done"] and final["done_reason"] == "stop" and final["eval_count"] == 7
    (runner,) = server.launcher.live()
    assert "hello" in runner.payloads[0]["prompt"]  # the prompt the API rendered reached it
    answer = server.http.post("/api/chat", json={**body, "stream": False}).json()
    assert answer["message"]["content"] == "<think>hm</think>Hi!"


def test_openai_chat_gets_the_scripted_text(scripted_server: ScriptedServer) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    server.script("tiny", Script(chunks=["4", "2"]))
    body = {"model": "tiny", "messages": [{"role": "user", "content": "6*7?"}]}
    answer = server.http.post("/v1/chat/completions", json=body).json()
    assert answer["choices"][0]["message"]["content"] == "42"
    assert answer["usage"]["completion_tokens"] == 2


def test_a_runner_crash_mid_stream_ends_the_stream_with_an_error_and_the_model_reloads(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    server.script("tiny", Script(chunks=["a", "b", "c"], crash_after=2))
    lines = ndjson(server.http.post("/api/generate", json={"model": "tiny", "prompt": "x"}).text)
    assert [line.get("response") for line in lines[:2]] == ["a", "b"]
    assert "runner" in lines[-1]["error"]
    wait_for(lambda: server.ps() == [])
    server.script("tiny", Script(chunks=["ok"]))
    body = {"model": "tiny", "prompt": "x", "stream": False}
    assert server.http.post("/api/generate", json=body).json()["response"] == "ok"
    assert len(server.launcher.launched) == 2


def test_state_json_is_built_from_the_scheduler_snapshots(scripted_server: ScriptedServer) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    gate = Gate()
    server.script("tiny", Script(load_steps=[0.25], load_gate=gate))
    body = {"model": "tiny", "prompt": "x", "stream": False}
    request = threading.Thread(target=lambda: server.http.post("/api/generate", json=body))
    request.start()  # waits for the load, which waits at the gate
    wait_for(lambda: gate.reached.is_set())
    (entry,) = server.ps()
    assert set(entry) == PS_FIELDS
    assert (entry["state"], entry["load_progress"], entry["pid"]) == ("loading", 0.25, None)
    status = server.http.get("/api/hana/status").json()
    (shown,) = status["models"]
    assert {**shown, "expires_at": ""} == {**entry, "expires_at": ""}  # "now" while loading
    with server.http.stream("GET", "/api/hana/events") as events:
        first = next(line for line in events.iter_lines() if line.startswith("data: "))
    state = json.loads(first.removeprefix("data: "))
    assert state["event"] == "state" and state["models"][0]["state"] == "loading"
    gate.open()
    request.join(30)
    assert server.ps()[0]["state"] == "ready"


def test_openai_requests_with_nothing_to_generate_are_refused_before_any_load(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    for path, body, message in (
        ("/v1/completions", {"model": "tiny"}, "prompt is required"),
        ("/v1/completions", {"model": "tiny", "prompt": ""}, "prompt is required"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, "too short"),
    ):
        answer = server.http.post(path, json=body)
        assert answer.status_code == 400 and message in answer.json()["error"]["message"]
    assert server.http.get("/api/ps").json()["models"] == []
