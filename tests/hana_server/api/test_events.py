"""`/api/hana/events`: every runner state change arrives as a server-sent event."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
from server_harness import HanaServerProcess, wait_for


def sse_events(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def test_state_events_follow_a_load_a_request_and_an_unload(server: HanaServerProcess) -> None:
    seen: list[dict] = []
    done = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream("GET", "/api/hana/events") as response,
        ):
            assert response.headers["content-type"] == "text/event-stream"
            for event in sse_events(response):
                seen.append(event)
                if event["event"] == "unloaded" and event["model"] == "tiny2:latest":
                    done.set()
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_for(lambda: seen)  # the current state comes first
    assert seen[0]["event"] == "state"
    body = {"model": "tiny2", "prompt": "x", "stream": False, "options": {"num_predict": 30}}
    server.http.post("/api/generate", json=body)
    server.http.post("/api/generate", json={"model": "tiny2", "prompt": "", "keep_alive": 0})
    assert done.wait(30)

    def states() -> list[str]:
        found = []
        for event in seen:
            for model in event.get("models", []):
                if model["name"] == "tiny2:latest" and model["state"] not in found:
                    found.append(model["state"])
        return found

    assert states()[:1] == ["loading"]
    assert {"loading", "ready", "busy"} <= set(states())
    sequence = [e["seq"] for e in seen[1:]]
    assert sequence == sorted(sequence)


def test_status_snapshot(server: HanaServerProcess) -> None:
    status = server.http.get("/api/hana/status").json()
    assert status["url"] == server.url
    assert status["cpus"] >= 1
    assert status["settings"]["num_parallel"] == 4
