"""Streams flush once per turn of the event loop: chunks that are ready together leave in one
write (fewer wake-ups for server and client), chunks that come apart still leave one by one, and
an error after buffered chunks still ends the stream in Ollama's way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from scripted_runner import Script
from scripted_server import ScriptedServer
from tornado import web


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes of each flush of a hana handler (the scripted server runs in this process)."""
    sizes: list[int] = []
    original = web.RequestHandler.flush

    def counting(self: web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
        if self.request.path.startswith(("/api/generate", "/v1/completions")):
            sizes.append(sum(len(part) for part in self._write_buffer))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(web.RequestHandler, "flush", counting)
    return sizes


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_chunks_ready_together_leave_in_one_flush(
    scripted_server: ScriptedServer, flushes: list[int]
) -> None:
    server = scripted_server
    server.create_tiny("burst")
    server.script("burst", Script(chunks=[f"t{i} " for i in range(50)]))  # no delay: one burst
    answer = lines(server.http.post("/api/generate", json={"model": "burst", "prompt": "x"}).text)
    assert "".join(c["response"] for c in answer) == "".join(f"t{i} " for i in range(50))
    assert answer[-1]["done"] is True
    assert len(flushes) <= 3, flushes  # 51 chunks, not 51 flushes


def test_chunks_that_come_apart_are_not_held_back(
    scripted_server: ScriptedServer, flushes: list[int]
) -> None:
    server = scripted_server
    server.create_tiny("paced")
    server.script("paced", Script(chunks=["a", "b", "c", "d"], chunk_delay=0.05))
    answer = lines(server.http.post("/api/generate", json={"model": "paced", "prompt": "x"}).text)
    assert [c["response"] for c in answer[:-1]] == ["a", "b", "c", "d"]
    assert len(flushes) >= 4, flushes  # each was flushed when it came


def test_openai_streams_are_batched_too(
    scripted_server: ScriptedServer, flushes: list[int]
) -> None:
    server = scripted_server
    server.create_tiny("burst")
    server.script("burst", Script(chunks=[f"t{i} " for i in range(50)]))
    body = {"model": "burst", "prompt": "x", "stream": True}
    text = server.http.post("/v1/completions", json=body).text
    events = [line for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 51
    assert len(flushes) <= 3, flushes


def test_an_error_after_buffered_chunks_ends_the_stream_with_an_error_line(
    scripted_server: ScriptedServer, flushes: list[int]
) -> None:
    server = scripted_server
    server.create_tiny("crashy")
    server.script("crashy", Script(chunks=["one ", "two "], crash_after=2))
    response = server.http.post("/api/generate", json={"model": "crashy", "prompt": "x"})
    assert response.status_code == 200  # the stream had started: Ollama ends it with a line
    answer = lines(response.text)
    assert [c.get("response") for c in answer[:2]] == ["one ", "two "]
    assert "error" in answer[-1]
