"""Malformed and hostile requests through the real HTTP app (scripted runners): each is answered
with a 400 in Ollama's shape (or served, where Ollama serves it), and no slot, bad value or
runner is left behind for the next caller."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from scripted_runner import Gate, Script, ScriptedLauncher
from scripted_server import ScriptedServer
from server_harness import wait_for

CHAT = "/api/chat"
GENERATE = "/api/generate"


def in_flight(server: ScriptedServer) -> int:
    return sum(entry["in_flight"] for entry in server.ps())


def served_plainly(server: ScriptedServer) -> bool:
    """A plain request still works and leaves nothing in flight."""
    body = {"model": "tiny", "prompt": "hi", "stream": False}
    answer = server.http.post(GENERATE, json=body)
    return answer.status_code == 200 and answer.json()["response"] == "Hello, world"


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        (GENERATE, b'{"model": "tiny", "prompt": "x", "keep_alive": "100000000h"}',
         'time: invalid duration "100000000h"'),
        (GENERATE, b'{"model": "tiny", "prompt": "x", "keep_alive": NaN}',
         "invalid character 'N'"),
        (GENERATE, b'{"model": "tiny", "prompt": "x", "keep_alive": ' + b"9" * 400 + b"}",
         "cannot unmarshal number"),
        (GENERATE, b'{"model": "tiny", "prompt": "x", "options": {"num_ctx": 1e400}}',
         "cannot unmarshal number 1e400"),
        (CHAT, b'{"model": "tiny", "messages": [], "options": {"temperature": NaN}}',
         "invalid character 'N'"),
        (GENERATE, b'{"model": "tiny", "prompt": "x", "options": {"num_ctx": 1e300}}',
         'option "num_ctx" must be of type integer'),
        (GENERATE, b'{"model": "tiny", "prompt": "\xff\xfe"}', "not valid UTF-8"),
        (GENERATE, b'{"model": "tiny", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
         "exceeded max depth"),
        (CHAT, b'{"model": "tiny", "messages": [1]}', "messages.0"),
        (GENERATE, b'{"model": "tiny", "prompt": "x", "options": {"stop": ['
         + b",".join([b'"s"'] * 65) + b"]}}", 'option "stop" takes at most'),
    ],
)  # fmt: skip
def test_malformed_native_requests_get_a_400_and_leave_nothing_behind(
    scripted_server: ScriptedServer, route: str, body: bytes, message: str
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    answer = server.http.post(route, content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert server.ps() == []  # refused before the scheduler saw it: nothing was loaded
    assert served_plainly(server)
    assert in_flight(server) == 0


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/chat/completions",
         {"model": "tiny", "stream": True, "stream_options": 5,
          "messages": [{"role": "user", "content": "x"}]},
         "stream_options"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [1]}, "messages.0"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, "[] is too short"),
        ("/v1/chat/completions",
         {"model": "tiny", "response_format": "json",
          "messages": [{"role": "user", "content": "x"}]},
         "response_format"),
        ("/v1/chat/completions",
         {"model": "tiny", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]},
         "temperature"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]},
         "model is required"),
        ("/v1/completions", {"model": "tiny", "prompt": ["a", "b"]}, "expected a string"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "stop": [1]}, "stop"),
        ("/v1/embeddings", {"model": "tiny", "input": []}, "invalid input"),
        ("/v1/embeddings", {"model": "tiny", "input": "x", "encoding_format": "hex"},
         "encoding_format"),
    ],
)  # fmt: skip
def test_malformed_openai_requests_get_a_400_and_leave_nothing_behind(
    scripted_server: ScriptedServer, route: str, body: dict, message: str
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    answer = server.http.post(route, json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]["message"]
    assert server.ps() == []
    assert served_plainly(server)
    assert in_flight(server) == 0


def test_keep_alive_beyond_gos_range_is_forever_and_never_sticks_as_an_error(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    body = {"model": "tiny", "prompt": "x", "stream": False, "keep_alive": 1e300}
    assert server.http.post(GENERATE, json=body).status_code == 200
    (entry,) = server.ps()
    assert entry["keep_alive"] == -1 and entry["expires_at"].startswith("2318")
    assert entry["in_flight"] == 0
    assert served_plainly(server)  # the runner took no bad value
    body = {**body, "keep_alive": "1m"}
    assert server.http.post(GENERATE, json=body).status_code == 200
    assert server.ps()[0]["keep_alive"] == 60


def test_lone_surrogates_reach_the_runner_as_replacement_characters(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    body = (
        b'{"model": "tiny", "stream": false, "system": "s\\ud800", '
        b'"messages": [{"role": "user", "content": "m\\udc00"}]}'
    )
    answer = server.http.post(CHAT, content=body)
    assert answer.status_code == 200, answer.text
    (runner,) = server.launcher.live()
    prompt = runner.payloads[0]["prompt"]
    assert "m\ufffd" in prompt
    body = b'{"model": "tiny", "stream": false, "system": "s\\ud800", "prompt": "p\\udfff"}'
    assert server.http.post(GENERATE, content=body).status_code == 200
    assert "p\ufffd" in runner.payloads[1]["prompt"]


def test_a_client_that_leaves_mid_stream_gives_its_slot_back(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")
    gate = Gate()
    server.script("tiny", Script(chunks=["a", "b", "c"], gate=gate, gate_after=1))
    for route, body in (
        (GENERATE, {"model": "tiny", "prompt": "x"}),
        (
            "/v1/chat/completions",
            {
                "model": "tiny",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "x"}],
            },
        ),
    ):
        with server.http.stream("POST", route, json=body) as answer:
            lines = answer.iter_lines()  # kept: dropping the iterator closes the connection
            assert next(lines)  # the first chunk arrived; the runner waits at the gate
            assert in_flight(server) == 1, route
        wait_for(lambda: in_flight(server) == 0)
    gate.open()
    body = {"model": "tiny", "prompt": "x", "stream": False}
    assert server.http.post(GENERATE, json=body).json()["response"] == "abc"
    assert in_flight(server) == 0


def test_an_answer_never_read_still_gives_its_slot_back(tmp_path: object) -> None:
    """The guarantee itself: whatever happens between admission and the first chunk, leaving the
    AnswerStream's `async with` releases the lease."""
    from hana_server.config import HanaSettings
    from hana_server.requests import ChatRequest
    from hana_server.service import HanaService
    from tiny_gguf import write_tiny_gguf

    async def scenario() -> tuple[int, int]:
        root = tmp_path / "models"  # type: ignore[operator]
        service = HanaService(
            HanaSettings(models_dir=str(root), register_default_model=False),
            launcher=ScriptedLauncher(),
        )
        await service.start()
        gguf = write_tiny_gguf(root.parent / "tiny.gguf")
        digest = service.store.import_file(gguf)
        service.store.create("tiny", model_digest=digest)
        request = ChatRequest(model="tiny", messages=[{"role": "user", "content": "x"}])
        answer = await service.generation.start_chat(request)
        held = service.scheduler.ps()[0].active_requests
        with pytest.raises(RuntimeError):
            async with answer:  # type: ignore[union-attr]
                raise RuntimeError("the handler failed before reading the answer")
        left = service.scheduler.ps()[0].active_requests
        await service.stop()  # must not raise
        return held, left

    assert asyncio.run(scenario()) == (1, 0)


def test_bodies_are_parsed_once_the_host_check_passed_and_errors_are_json(
    scripted_server: ScriptedServer,
) -> None:
    answer = httpx.post(
        scripted_server.url + GENERATE, content=b"{", timeout=10, headers={"Host": "127.0.0.1"}
    )
    assert answer.status_code == 400
    assert json.loads(answer.text)["error"].startswith("invalid JSON")


def test_num_ctx_beyond_the_training_context_is_clamped_like_ollama(
    scripted_server: ScriptedServer,
) -> None:
    server = scripted_server
    server.create_tiny("tiny")  # trained for 4096 tokens
    body = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_ctx": 2**62}}
    assert server.http.post(GENERATE, json=body).status_code == 200
    assert server.ps()[0]["context_length"] == 4096


def test_the_scheduler_refuses_bad_keep_alives_before_any_change_and_closes_cleanly(
    tmp_path: object,
) -> None:
    import math

    from hana_server.config import HanaSettings
    from hana_server.service import HanaService
    from tiny_gguf import write_tiny_gguf

    from hana_protocol.errors import InvalidRequest

    async def scenario() -> None:
        root = tmp_path / "models"  # type: ignore[operator]
        service = HanaService(
            HanaSettings(models_dir=str(root), register_default_model=False),
            launcher=ScriptedLauncher(),
        )
        await service.start()
        digest = service.store.import_file(write_tiny_gguf(root.parent / "tiny.gguf"))
        model = service.store.create("tiny", model_digest=digest)
        scheduler = service.scheduler
        (await scheduler.acquire(model, {}, 60)).release()
        for bad in (math.nan, -5.0, 1e300):  # the API never passes these; the scheduler checks
            with pytest.raises(InvalidRequest):
                await scheduler.acquire(model, {}, bad)
            with pytest.raises(InvalidRequest):
                scheduler.set_keep_alive(model, bad)
        (snapshot,) = scheduler.ps()
        assert (snapshot.active_requests, snapshot.keep_alive) == (0, 60)
        lease = await scheduler.acquire(model, {}, None)
        lease.runner.keep_alive = 1e300  # a value that got past every check anyway
        lease.release()  # arms the expiry: must not overflow a datetime
        await service.stop()  # and shutting down must not raise

    asyncio.run(scenario())
