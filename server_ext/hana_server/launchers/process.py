"""`ProcessLauncher` (the real `RunnerLauncher`) and `RunnerProcess`: start one runner with
fork+exec in its own process group, learn its port, wait until it is ready, notice when it dies,
and stop it (SIGTERM, then SIGKILL).

The runner's stderr is read continuously: its lines go to the given logger and the last ones are
kept, because the last line of a runner that died is the best error message there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from hana_protocol.errors import RunnerFailed
from hana_server.launchers.http_client import RunnerClient
from hana_server.launchers.protocol import RunnerSpec
from hana_server.runner.settings import SECRET_ENV

PORT_LINE_TIMEOUT = 30.0
LOG_TAIL_LINES = 50
HEALTH_POLL_SECONDS = 0.15
EXIT_AFTER_ERROR_SECONDS = 2.0  # how long a runner reporting a load error gets to exit

default_log = logging.getLogger("hana_server.launchers")

# A runner must not import from wherever the server was started (a shared, writable notebook
# directory lets another user plant `llama_cpp.py` there): `-P` keeps the cwd off sys.path, and
# the runner runs in the filesystem root, so nothing relative resolves into the caller's directory.
RUNNER_CWD = os.path.abspath(os.sep)


def isolated_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with PYTHONPATH made safe for a process in RUNNER_CWD: empty entries (which mean
    the cwd) dropped, relative ones made absolute as the user meant them."""
    path = env.get("PYTHONPATH")
    if path is not None:
        entries = [os.path.abspath(p) for p in path.split(os.pathsep) if p]
        if entries:
            env["PYTHONPATH"] = os.pathsep.join(entries)
        else:
            del env["PYTHONPATH"]
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONSAFEPATH"] = "1"  # also for anything the runner itself starts
    return env


class RunnerProcess:
    """A started runner process. Create with `await RunnerProcess.start(...)`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        port: int,
        secret: str,
        model_path: Path,
        log: logging.Logger,
        log_tail: deque[str],
        stderr_task: asyncio.Task[None],
    ) -> None:
        self.pid = process.pid
        self.port = port
        self.model_path = model_path
        self.client = RunnerClient(port, secret)
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._process = process
        self._log = log
        self._log_tail = log_tail
        self._stderr_task = stderr_task
        self._stdout_task = asyncio.create_task(_drain(process.stdout))
        self._waiter = asyncio.create_task(self._wait_for_exit())

    @classmethod
    async def start(
        cls,
        model_path: Path | str,
        *,
        ctx_size: int,
        parallel: int,
        threads: int,
        embedding: bool = False,
        swa_full: bool = False,
        batch_size: int = 512,
        niceness: int = 0,
        stream_interval: int = 0,
        gpu_layers: int = 0,
        main_gpu: int = 0,
        log: logging.Logger | None = None,
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
    ) -> RunnerProcess:
        """Spawn `python -m hana_server.runner` and return once it announced its port.

        Raises RunnerFailed (with the runner's last log line) if it exits or stays silent first.
        """
        log = log or default_log
        model_path = Path(os.path.abspath(model_path))  # the runner's cwd is not ours
        secret = secrets.token_urlsafe(32)
        command: list[str] = [
            python,
            "-P",  # no cwd / script dir first on sys.path (see isolated_env)
            "-m",
            "hana_server.runner",
            "--model",
            str(model_path),
            "--ctx-size",
            str(ctx_size),
            "--parallel",
            str(parallel),
            "--threads",
            str(threads),
            "--batch-size",
            str(batch_size),
            "--parent-pid",
            str(os.getpid()),
            "--niceness",
            str(niceness),
            "--stream-interval",
            str(stream_interval),
        ]
        if embedding:
            command.append("--embedding")
        if swa_full:
            command.append("--swa-full")
        if gpu_layers > 0:
            command += ["--gpu-layers", str(gpu_layers), "--main-gpu", str(main_gpu)]
        env = isolated_env({**os.environ, **(extra_env or {}), SECRET_ENV: secret})
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=RUNNER_CWD,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # Its own process group, so terminal signals do not reach it, but the server's session:
            # with Linux autogroups, a session of its own would get as much CPU as the whole
            # server's session, however low its nice value (see runner/priority.py).
            process_group=0,
        )
        log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        stderr_task = asyncio.create_task(_read_log(process.stderr, log, log_tail, process.pid))
        try:
            port = await _read_port(process, PORT_LINE_TIMEOUT)
        except BaseException as error:
            await _kill_and_reap(process)
            await asyncio.wait([stderr_task], timeout=1.0)
            if isinstance(error, RunnerFailed):
                raise RunnerFailed(_with_tail(str(error), log_tail)) from None
            raise
        log.info("runner %d for %s listening on port %d", process.pid, model_path.name, port)
        return cls(process, port, secret, model_path, log, log_tail, stderr_task)

    @property
    def last_log_line(self) -> str:
        return self._log_tail[-1] if self._log_tail else ""

    @property
    def log_tail(self) -> list[str]:
        return list(self._log_tail)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait_ready(
        self, timeout: float, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, object]:
        """Poll /health until the model is loaded; returns the final health answer.

        `timeout` counts from the last progress change (a big model loading slowly but steadily is
        fine; a stuck one is not). On failure the process is terminated and RunnerFailed raised.
        """
        last_progress = -1.0
        deadline = time.monotonic() + timeout
        while True:
            if self.exited.done():
                await self.terminate()  # reaped already; this closes the HTTP client
                raise RunnerFailed(self._exit_message("exited while loading the model"))
            try:
                health = await self.client.health(timeout=max(1.0, HEALTH_POLL_SECONDS * 4))
            except RunnerFailed:
                health = None  # not answering yet, or just died: the exit check decides
            if health is not None:
                status = health.get("status")
                if status == "ok":
                    if on_progress is not None and last_progress < 1.0:
                        on_progress(1.0)
                    return health
                if status == "error":
                    # A runner whose load failed exits at once: its exit code and last log lines
                    # say more than the health answer, when they come within a moment.
                    await asyncio.wait([self.exited], timeout=EXIT_AFTER_ERROR_SECONDS)
                    exited = self.exited.done()
                    await self.terminate()
                    if exited:
                        raise RunnerFailed(self._exit_message("exited while loading the model"))
                    raise RunnerFailed(str(health.get("error") or self._exit_message("failed")))
                progress = float(health.get("progress") or 0.0)  # type: ignore[arg-type]
                if progress != last_progress:
                    last_progress = progress
                    deadline = time.monotonic() + timeout
                    if on_progress is not None:
                        on_progress(progress)
            if time.monotonic() > deadline:
                await self.terminate()
                raise RunnerFailed(
                    _with_tail(
                        f"timed out after {timeout:.0f}s without progress loading "
                        f"{self.model_path.name}",
                        self._log_tail,
                    )
                )
            await asyncio.wait([self.exited], timeout=HEALTH_POLL_SECONDS)

    async def terminate(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code once reaped."""
        if not self.exited.done():
            _signal_group(self._process, signal.SIGTERM)
            done, _ = await asyncio.wait([self.exited], timeout=grace)
            if not done:
                self._log.warning(
                    "runner %d ignored SIGTERM for %.1fs; killing it", self.pid, grace
                )
                _signal_group(self._process, signal.SIGKILL)
        code = await asyncio.shield(self.exited)
        await self.client.aclose()
        return code

    def _exit_message(self, what: str) -> str:
        code = self._process.returncode
        return _with_tail(
            f"runner for {self.model_path.name} {what} (exit code {code})", self._log_tail
        )

    async def _wait_for_exit(self) -> None:
        code = await self._process.wait()
        # The last lines arrive just before EOF; wait for them so the crash message is complete.
        await asyncio.wait([self._stderr_task, self._stdout_task], timeout=1.0)
        if code != 0:
            self._log.warning(
                "runner %d exited with code %d: %s", self.pid, code, self.last_log_line
            )
        if not self.exited.done():
            self.exited.set_result(code)


def _with_tail(message: str, tail: Sequence[str]) -> str:
    return f"{message}: {tail[-1]}" if tail else message


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # The runner leads its own process group; signal the group so that nothing it
        # might have started survives it.
        os.killpg(process.pid, signum)


async def _kill_and_reap(process: asyncio.subprocess.Process) -> None:
    _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


async def _read_port(process: asyncio.subprocess.Process, timeout: float) -> int:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
    except TimeoutError:
        raise RunnerFailed(f"runner did not announce its port within {timeout:.0f}s") from None
    if not line:
        code = await process.wait()
        raise RunnerFailed(f"runner exited before announcing its port (exit code {code})")
    try:
        return int(json.loads(line)["port"])
    except (ValueError, KeyError, TypeError):
        raise RunnerFailed(f"runner printed an unexpected first line: {line[:200]!r}") from None


async def _read_log(
    stream: asyncio.StreamReader | None, log: logging.Logger, tail: deque[str], pid: int
) -> None:
    if stream is None:
        return
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line longer than the stream limit: keep its start
            raw = await stream.read(64 * 1024)
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace").rstrip()
        if line:
            tail.append(line)
            log.debug("runner %d: %s", pid, line)


async def _drain(stream: asyncio.StreamReader | None) -> None:
    if stream is None:
        return
    while await stream.read(64 * 1024):
        pass


class ProcessLauncher:
    """The real `RunnerLauncher`: each runner is a `python -m hana_server.runner` process."""

    def __init__(
        self, *, niceness: int = 0, stream_interval: int = 0, log: logging.Logger | None = None
    ) -> None:
        """`niceness`: how far below the server's CPU priority runners compute;
        `stream_interval`: milliseconds between two writes of one answer stream (at most)."""
        self.niceness = niceness
        self.stream_interval = stream_interval
        self.log = log

    async def launch(self, spec: RunnerSpec, *, threads: int) -> RunnerProcess:
        return await RunnerProcess.start(
            spec.model_path,
            ctx_size=spec.ctx_size,
            parallel=spec.parallel,
            threads=threads,
            embedding=spec.embedding,
            swa_full=spec.swa_full,
            niceness=self.niceness,
            stream_interval=self.stream_interval,
            gpu_layers=spec.gpu_layers,
            main_gpu=spec.main_gpu,
            log=self.log,
        )
