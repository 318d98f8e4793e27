"""RunnerProcess and RunnerClient against real runner processes on the tiny model."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest
from hana_server.launchers import RunnerProcess

from hana_protocol.errors import RunnerFailed


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def start_ready(model: Path, **options: int) -> RunnerProcess:
    runner = await RunnerProcess.start(
        model, **{"ctx_size": 256, "parallel": 1, "threads": 1, **options}
    )
    progress: list[float] = []
    await runner.wait_ready(60, progress.append)
    assert progress and progress[-1] == 1.0
    return runner


async def test_terminate_leaves_no_process(tiny_gguf_path: Path) -> None:
    runner = await start_ready(tiny_gguf_path)
    assert not gone(runner.pid)
    assert os.getpgid(runner.pid) == runner.pid  # leads its own process group
    assert await runner.terminate() == 0
    assert gone(runner.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(runner.pid, 0)
    assert runner.exited.done()
    assert await runner.terminate() == 0  # idempotent


async def test_runner_computes_below_the_server_priority_in_its_session(
    tiny_gguf_path: Path,
) -> None:
    # Nice value and compute threads: the API must keep answering while models compute. Same
    # session as the server: with Linux autogroups a session of its own would get as much CPU
    # as the whole server, however nice.
    runner = await start_ready(tiny_gguf_path, threads=2, niceness=7)
    try:
        process = psutil.Process(runner.pid)
        assert process.nice() == os.nice(0) + 7
        assert {psutil.Process(t.id).nice() for t in process.threads()} == {os.nice(0) + 7}
        assert os.getsid(runner.pid) == os.getsid(0)
        assert os.getpgid(runner.pid) == runner.pid
    finally:
        await runner.terminate()


async def test_terminate_during_a_stream(tiny_gguf_path: Path) -> None:
    runner = await start_ready(tiny_gguf_path, ctx_size=4096)
    stream = runner.client.completion({"prompt": "x", "options": {"num_predict": 4000}})
    await anext(stream)
    assert await runner.terminate() == 0
    with pytest.raises(RunnerFailed):
        async for _ in stream:
            pass
    assert gone(runner.pid)


async def test_a_crash_resolves_exited_and_fails_the_stream(tiny_gguf_path: Path) -> None:
    runner = await start_ready(tiny_gguf_path, ctx_size=4096)
    stream = runner.client.completion({"prompt": "x", "options": {"num_predict": 4000}})
    await anext(stream)
    os.kill(runner.pid, signal.SIGKILL)
    assert await asyncio.wait_for(runner.exited, 10) == -signal.SIGKILL
    with pytest.raises(RunnerFailed, match="connection"):
        async for _ in stream:
            pass
    assert runner.log_tail  # what the runner said is kept for error messages
    await runner.terminate()


async def test_cancelling_the_consumer_closes_the_sequence(tiny_gguf_path: Path) -> None:
    runner = await start_ready(tiny_gguf_path, ctx_size=4096)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in runner.client.completion({"prompt": "x", "options": {"num_predict": 4000}}):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    assert (await runner.client.health())["active"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if (await runner.client.health())["active"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await runner.client.health())["active"] == 0
    await runner.terminate()


async def test_start_with_a_missing_model_fails_with_the_runners_message(tmp_path: Path) -> None:
    runner = await RunnerProcess.start(tmp_path / "nope.gguf", ctx_size=64, parallel=1, threads=1)
    with pytest.raises(RunnerFailed, match=r"nope\.gguf"):
        await runner.wait_ready(60)
    assert gone(runner.pid)


async def test_a_runner_that_never_starts_is_reported(tmp_path: Path) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\necho 'cannot start: no such interpreter feature' >&2\nexit 3\n"
    )
    fake_python.chmod(0o755)
    with pytest.raises(RunnerFailed, match=r"exit code 3.*cannot start"):
        await RunnerProcess.start(
            tmp_path / "x.gguf", ctx_size=64, parallel=1, threads=1, python=str(fake_python)
        )


async def test_a_module_planted_in_the_callers_directory_is_not_imported(
    tiny_gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user who can write to the directory the server was started from plants a module
    # the runner imports; the runner must load the real one (and run from a safe directory).
    shared = tmp_path / "shared-notebooks"
    shared.mkdir()
    marker = tmp_path / "planted-module-ran"
    (shared / "llama_cpp.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit('planted llama_cpp imported')\n"
    )
    monkeypatch.chdir(shared)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(["", *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
    )
    runner = await start_ready(Path(os.path.relpath(tiny_gguf_path, shared)))
    try:
        assert not marker.exists()
        assert Path(f"/proc/{runner.pid}/cwd").resolve() != shared.resolve()
    finally:
        await runner.terminate()
