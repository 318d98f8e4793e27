"""Scheduler behaviour seen from outside: real server, real runner processes, tiny models."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest
from server_harness import HanaServerProcess, wait_for

LONG = {"num_predict": 100_000, "temperature": 0}


@contextmanager
def streaming(server: HanaServerProcess, model: str, **body: Any) -> Iterator[Iterator[dict]]:
    """An open /api/generate stream; leaving the block closes the connection (a disconnect)."""
    payload = {"model": model, "prompt": "go", "options": LONG, **body}
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("POST", "/api/generate", json=payload) as response,
    ):
        assert response.status_code == 200
        yield (json.loads(line) for line in response.iter_lines() if line.strip())


def generate(server: HanaServerProcess, model: str, **options: Any) -> dict:
    body = {
        "model": model,
        "prompt": "hi",
        "stream": False,
        "options": {"num_predict": 4, **options},
    }
    response = server.http.post("/api/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def names(server: HanaServerProcess) -> list[str]:
    return sorted(m["name"].split(":")[0] for m in server.ps())


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


def test_thread_budget_splits_cores_between_busy_runners(server: HanaServerProcess) -> None:
    cpus = server.http.get("/api/hana/status").json()["cpus"]
    if cpus < 2:
        pytest.skip("needs at least 2 cores to split")
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
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server(("tiny", "tiny2"), HANA_THREAD_BUDGET="0")
    cpus = server.http.get("/api/hana/status").json()["cpus"]
    if cpus < 2:
        pytest.skip("needs at least 2 cores to tell a split from none")
    with streaming(server, "tiny") as a, streaming(server, "tiny2") as b:
        next(a)
        next(b)
        busy = [m for m in server.ps() if m["state"] == "busy"]
        assert len(busy) == 2
        assert all(m["threads"] == cpus for m in busy)


def test_requests_beyond_num_parallel_wait_in_the_queue(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server(HANA_NUM_PARALLEL="1")
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


def test_queue_full_answers_503(start_server: Callable[..., HanaServerProcess]) -> None:
    server = start_server(HANA_NUM_PARALLEL="1", HANA_MAX_QUEUE="1")
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


def test_disconnect_mid_stream_frees_the_slot(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server(HANA_NUM_PARALLEL="1")
    with streaming(server, "tiny") as stream:
        for _ in range(3):
            next(stream)
        assert server.ps()[0]["in_flight"] == 1
    wait_for(lambda: server.ps()[0]["in_flight"] == 0)
    assert generate(server, "tiny")["eval_count"] == 4


def test_least_recently_used_idle_model_is_evicted(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server(("a", "b", "c"), HANA_MAX_LOADED_MODELS="2")
    generate(server, "a")
    generate(server, "b")
    generate(server, "a")  # b is now the least recently used
    generate(server, "c")
    assert names(server) == ["a", "c"]


def test_pinned_model_is_evicted_last(start_server: Callable[..., HanaServerProcess]) -> None:
    server = start_server(("a", "b", "c"), HANA_MAX_LOADED_MODELS="2")
    server.http.post("/api/generate", json={"model": "a", "prompt": "", "keep_alive": -1})
    generate(server, "b")  # a is least recently used, but pinned
    generate(server, "c")
    assert names(server) == ["a", "c"]
    pinned = next(m for m in server.ps() if m["name"] == "a:latest")
    assert pinned["expires_at"].startswith("2318")


def test_keep_alive_expiry_unloads_and_terminates_the_runner(
    server: HanaServerProcess,
) -> None:
    generate(server, "tiny3", **{})
    server.http.post("/api/generate", json={"model": "tiny3", "prompt": "", "keep_alive": "1s"})
    pid = next(m["pid"] for m in server.ps() if m["name"] == "tiny3:latest")
    wait_for(lambda: "tiny3" not in names(server), timeout=10)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")


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
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server(HANA_MEMORY_BUDGET=str(1 << 20))  # 1 MiB: nothing fits
    response = server.http.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert response.status_code == 500
    assert "memory budget" in response.json()["error"]
    assert "tiny" in response.json()["error"]
    assert server.ps() == []


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
    start_server: Callable[..., HanaServerProcess], gemma_gguf_path: Any
) -> None:
    server = start_server()
    server.create_model("big", gemma_gguf_path)
    generate(server, "tiny")
    loading: list[dict] = []
    thread = threading.Thread(target=lambda: loading.append(generate(server, "big")))
    thread.start()
    wait_for(
        lambda: any(m["name"] == "big:latest" and m["state"] == "loading" for m in server.ps())
    )
    started = time.monotonic()
    assert generate(server, "tiny")["eval_count"] == 4
    still_loading = any(m["name"] == "big:latest" and m["state"] == "loading" for m in server.ps())
    thread.join(120)
    assert loading and loading[0]["eval_count"] == 4
    assert still_loading, "the tiny request should not have waited for the big load"
    assert time.monotonic() - started < 60
