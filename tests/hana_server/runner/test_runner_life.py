"""The runner process's life: loading, refusing to run without a secret, load failures, SIGTERM, and
exiting on its own when the process that started it is killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hana_server.launchers import RunnerProcess

from hana_protocol.errors import RunnerFailed


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_health_reports_loading_then_ok(tiny_gguf_path: Path) -> None:
    runner = await RunnerProcess.start(tiny_gguf_path, ctx_size=128, parallel=2, threads=1)
    try:
        seen = []
        for _ in range(1000):
            try:
                health = await runner.client.health(timeout=5)
            except RunnerFailed:  # not listening yet
                await asyncio.sleep(0.01)
                continue
            seen.append(health)
            if health["status"] != "loading":
                break
        statuses = [health["status"] for health in seen]
        # The port is announced before llama_cpp is even imported: the first answers say loading.
        assert statuses[0] == "loading"
        assert statuses[-1] == "ok"
        progress = [health["progress"] for health in seen]
        assert progress == sorted(progress) and progress[-1] == 1.0
        ready = seen[-1]
        assert (ready["n_ctx"], ready["parallel"], ready["threads"]) == (128, 2, 1)
        assert ready["active"] == 0 and ready["memory_bytes"] > 0
    finally:
        await runner.terminate()


async def test_sigterm_ends_the_runner_cleanly(tiny_gguf_path: Path) -> None:
    runner = await RunnerProcess.start(tiny_gguf_path, ctx_size=128, parallel=1, threads=1)
    await runner.wait_ready(60)
    os.kill(runner.pid, signal.SIGTERM)
    assert await asyncio.wait_for(runner.exited, 10) == 0
    await runner.terminate()


async def test_a_model_that_cannot_load_fails_with_the_runners_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    runner = await RunnerProcess.start(broken, ctx_size=128, parallel=1, threads=1)
    with pytest.raises(RunnerFailed, match=r"error loading model .*broken\.gguf") as failure:
        await runner.wait_ready(60)
    assert "exit code 1" in str(failure.value)
    assert process_gone(runner.pid)


def test_runner_refuses_to_start_without_a_secret(tiny_gguf_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HANA_RUNNER_SECRET"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hana_server.runner",
            "--model",
            str(tiny_gguf_path),
            "--ctx-size",
            "9",
        ],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == b""  # never announced a port
    assert b"HANA_RUNNER_SECRET is not set" in result.stderr


PARENT_SCRIPT = """
import asyncio, sys
from hana_server.launchers import RunnerProcess

async def main():
    runner = await RunnerProcess.start(sys.argv[1], ctx_size=128, parallel=1, threads=1)
    await runner.wait_ready(60)
    print(runner.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_runner_exits_when_its_parent_is_killed(tiny_gguf_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(tiny_gguf_path)], stdout=subprocess.PIPE
    )
    runner_pid = 0
    try:
        assert parent.stdout is not None
        runner_pid = int(json.loads(parent.stdout.readline()))
        assert not process_gone(runner_pid)
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        parent.wait(10)
        deadline = time.monotonic() + 5
        while not process_gone(runner_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(runner_pid)
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
        if runner_pid and not process_gone(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)  # do not leak it when the test fails
