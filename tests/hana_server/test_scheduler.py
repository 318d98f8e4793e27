"""Scheduler behaviour seen from outside, through real HTTP. Policy runs on scripted runners
(`scripted_server.py`: the real app and scheduler, runners that answer in milliseconds); the tests
that need real runner processes (spawn, kill -9, SIGTERM, parent death) keep them. The policy in
detail, without HTTP, is in test_scheduling_policy.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest
from scripted_runner import Gate, Script
from scripted_server import ScriptedServer
from server_harness import HanaServerProcess, wait_for

LONG = {"num_predict": 100_000, "temperature": 0}
Server = HanaServerProcess | ScriptedServer


@contextmanager
def streaming(server: Server, model: str, **body: Any) -> Iterator[Iterator[dict]]:
    """An open /api/generate stream; leaving the block closes the connection (a disconnect)."""
    payload = {"model": model, "prompt": "go", "options": LONG, **body}
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("POST", "/api/generate", json=payload) as response,
    ):
        assert response.status_code == 200
        yield (json.loads(line) for line in response.iter_lines() if line.strip())


def generate(server: Server, model: str, **options: Any) -> dict:
    body = {
        "model": model,
        "prompt": "hi",
        "stream": False,
        "options": {"num_predict": 4, **options},
    }
    response = server.http.post("/api/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def names(server: Server) -> list[str]:
    return sorted(m["name"].split(":")[0] for m in server.ps())


@pytest.fixture
def scripted(
    start_scripted_server: Callable[..., ScriptedServer],
) -> Callable[..., ScriptedServer]:
    """A scripted server with `models` (one tiny GGUF each): a request with num_predict 4 gets 4
    chunks; a longer one gets 5, then its stream stays open until the client leaves."""

    def start(models: tuple[str, ...] = ("tiny",), **settings: Any) -> ScriptedServer:
        server = start_scripted_server(**settings)
        for seed, name in enumerate(models):
            server.create_tiny(name, seed=seed)
            server.script(
                name, Script(chunks=[f" w{i}" for i in range(8)], gate=Gate(), gate_after=5)
            )
        return server

    return start


def test_three_models_generate_at_once_in_three_runner_processes(
    server: HanaServerProcess,
) -> None:
    with (
        streaming(server, "tiny") as a,
        streaming(server, "tiny2") as b,
        streaming(server, "tiny3") as c,
    ):
        for stream in (a, b, c):
            next(stream)
        entries = {m["name"]: m for m in server.ps()}
        busy = [entries[f"{n}:latest"] for n in ("tiny", "tiny2", "tiny3")]
        assert all(e["state"] == "busy" and e["in_flight"] == 1 for e in busy)
        pids = {e["pid"] for e in busy}
        assert len(pids) == 3
        assert pids <= set(server.runner_pids())
        assert len({e["port"] for e in busy}) == 3
        for stream in (a, b, c):  # all three keep producing tokens at the same time
            assert next(stream)["response"] is not None


def test_thread_budget_splits_cores_between_busy_runners(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(("tiny", "tiny2"), num_threads=4)
    cpus = server.http.get("/api/hana/status").json()["cpus"]
    assert cpus == 4
    with streaming(server, "tiny") as a:
        next(a)
        wait_for(
            lambda: next(m for m in server.ps() if m["name"] == "tiny:latest")["threads"] == cpus
        )
        with streaming(server, "tiny2") as b:
            next(b)
            wait_for(lambda: sum(m["threads"] for m in server.ps() if m["state"] == "busy") <= cpus)
            busy = [m for m in server.ps() if m["state"] == "busy"]
            assert len(busy) == 2
            assert all(m["threads"] == cpus // 2 for m in busy)


def test_thread_budget_off_lets_every_busy_runner_use_all_cores(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(("tiny", "tiny2"), num_threads=4, thread_budget=False)
    cpus = server.http.get("/api/hana/status").json()["cpus"]
    with streaming(server, "tiny") as a, streaming(server, "tiny2") as b:
        next(a)
        next(b)
        busy = [m for m in server.ps() if m["state"] == "busy"]
        assert len(busy) == 2
        assert all(m["threads"] == cpus for m in busy)


def test_requests_beyond_num_parallel_wait_in_the_queue(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(num_parallel=1)
    results: list[dict] = []
    with streaming(server, "tiny") as first:
        next(first)
        waiter = threading.Thread(target=lambda: results.append(generate(server, "tiny")))
        waiter.start()
        wait_for(lambda: server.ps()[0]["queued"] == 1)
        assert server.ps()[0]["in_flight"] == 1
        assert not results  # still waiting for the slot
    waiter.join(30)  # the disconnect freed the slot, the queued request ran
    assert results and results[0]["eval_count"] == 4


def test_queue_full_answers_503(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(num_parallel=1, max_queue=1)
    with streaming(server, "tiny") as first:
        next(first)
        waiter = threading.Thread(target=lambda: generate(server, "tiny"), daemon=True)
        waiter.start()
        wait_for(lambda: server.ps()[0]["queued"] == 1)
        response = server.http.post("/api/generate", json={"model": "tiny", "prompt": "x"})
        assert response.status_code == 503
        assert response.json()["error"] == (
            "server busy, please try again.  maximum pending requests exceeded"
        )
    waiter.join(30)


def test_disconnect_mid_stream_frees_the_slot(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(num_parallel=1)
    with streaming(server, "tiny") as stream:
        for _ in range(3):
            next(stream)
        assert server.ps()[0]["in_flight"] == 1
    wait_for(lambda: server.ps()[0]["in_flight"] == 0)
    (runner,) = server.launcher.live()
    assert runner.cancelled == 1  # the runner was told to drop the sequence
    assert generate(server, "tiny")["eval_count"] == 4


def test_least_recently_used_idle_model_is_evicted(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(("a", "b", "c"), max_loaded_models=2)
    generate(server, "a")
    generate(server, "b")
    generate(server, "a")  # b is now the least recently used
    generate(server, "c")
    assert names(server) == ["a", "c"]


def test_pinned_model_is_evicted_last(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(("a", "b", "c"), max_loaded_models=2)
    server.http.post("/api/generate", json={"model": "a", "prompt": "", "keep_alive": -1})
    generate(server, "b")  # a is least recently used, but pinned
    generate(server, "c")
    assert names(server) == ["a", "c"]
    pinned = next(m for m in server.ps() if m["name"] == "a:latest")
    assert pinned["expires_at"].startswith("2318")


def test_keep_alive_expiry_unloads_and_terminates_the_runner(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(("tiny3",))
    generate(server, "tiny3", **{})
    server.http.post("/api/generate", json={"model": "tiny3", "prompt": "", "keep_alive": "1s"})
    (runner,) = server.launcher.live()
    wait_for(lambda: "tiny3" not in names(server), timeout=10)
    assert runner.terminated and not runner.alive


def test_keep_alive_zero_on_a_cold_request_answers_then_unloads(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server()  # nothing loaded: the request loads the model itself
    body = {
        "model": "tiny",
        "prompt": "x",
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 2},
    }
    assert server.http.post("/api/generate", json=body).json()["eval_count"] == 2
    wait_for(lambda: server.ps() == [])
    wait_for(lambda: server.runner_pids() == [])


def test_killed_runner_fails_the_stream_and_the_next_request_reloads(
    server: HanaServerProcess,
) -> None:
    with streaming(server, "tiny") as stream:
        next(stream)
        pid = next(m["pid"] for m in server.ps() if m["name"] == "tiny:latest")
        os.kill(pid, signal.SIGKILL)
        rest = list(stream)
    assert "error" in rest[-1]
    assert "runner" in rest[-1]["error"]
    wait_for(lambda: all(m["pid"] != pid for m in server.ps()))
    assert generate(server, "tiny")["eval_count"] == 4
    new_pid = next(m["pid"] for m in server.ps() if m["name"] == "tiny:latest")
    assert new_pid != pid


def test_model_that_can_never_fit_gets_a_clear_error(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(memory_budget=1 << 20)  # 1 MiB: nothing fits
    response = server.http.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert response.status_code == 500
    assert "memory budget" in response.json()["error"]
    assert "tiny" in response.json()["error"]
    assert server.ps() == []
    assert server.launcher.launched == []


def test_sigterm_stops_every_runner(start_server: Callable[..., HanaServerProcess]) -> None:
    server = start_server(("a", "b"))
    generate(server, "a")
    generate(server, "b")
    pids = server.runner_pids()
    assert len(pids) == 2
    assert server.stop(signal.SIGTERM) == 0
    for pid in pids:
        wait_for(lambda pid=pid: not psutil.pid_exists(pid), timeout=10)


def test_runners_exit_by_themselves_when_the_server_is_killed(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server()
    generate(server, "tiny")
    pids = server.runner_pids()
    assert pids
    server.stop(signal.SIGKILL)
    for pid in pids:
        wait_for(lambda pid=pid: not psutil.pid_exists(pid), timeout=10)


def test_loaded_model_is_served_while_another_model_loads(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(("tiny", "big"))
    words = [f" w{i}" for i in range(8)]
    gate = server.script("big", Script(chunks=words, load_steps=[0.5], load_gate=Gate())).load_gate
    assert gate is not None
    generate(server, "tiny")
    loading: list[dict] = []
    thread = threading.Thread(target=lambda: loading.append(generate(server, "big")))
    thread.start()
    wait_for(
        lambda: any(m["name"] == "big:latest" and m["state"] == "loading" for m in server.ps())
    )
    assert generate(server, "tiny")["eval_count"] == 4
    still_loading = any(m["name"] == "big:latest" and m["state"] == "loading" for m in server.ps())
    gate.open()
    thread.join(30)
    assert loading and loading[0]["eval_count"] == 4
    assert still_loading, "the tiny request should not have waited for the big load"
