"""A scripted fake runner for tests: `ScriptedLauncher` starts `ScriptedRunner`s that load in
milliseconds (or after scripted progress steps, or fail), stream chosen text chunks and final
metrics, crash mid-stream or at load when told, honour cancellation, and report threads and memory.

It follows the launcher protocol (`hana_server.launchers.protocol`), so the real scheduler (and,
through `scripted_server.py`, the real HTTP API) runs on it unchanged. Everything a test may call
from another thread than the runner's loop (`Gate.open`, `ScriptedRunner.crash`) is thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hana_server.launchers.protocol import RunnerSpec

from hana_protocol.errors import InvalidRequest, RunnerFailed

POLL_SECONDS = 0.002  # how often a waiting fake looks at a gate opened from another thread


class Gate:
    """A one-way barrier a script waits at until a test opens it (from any thread)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self.reached = threading.Event()  # set once something waits (or waited) here

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self, until: Callable[[], bool] = lambda: False) -> None:
        """Wait until opened, or until `until()` (the runner died) says to stop waiting."""
        self.reached.set()
        while not self._open.is_set() and not until():
            await asyncio.sleep(POLL_SECONDS)


@dataclass
class Script:
    """What one fake runner does. The defaults load at once and answer "Hello, world"."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    done_reason: str = "stop"
    metrics: dict[str, int] = field(default_factory=dict)  # overrides of the final counts
    chunk_delay: float = 0.0  # seconds before each chunk
    gate: Gate | None = None  # a stream stops here after `gate_after` chunks until opened
    gate_after: int = 1
    crash_after: int | None = None  # the runner dies (exit code 1) after this many chunks
    load_steps: list[float] = field(default_factory=list)  # progress reported while loading
    load_delay: float = 0.0  # seconds per load step (or in all, without steps)
    load_gate: Gate | None = None  # loading stops here until opened
    load_error: str | None = None  # the load fails with this message (the runner exits 1)
    memory_bytes: int = 1 << 20
    vram_bytes: int | None = None  # GPU buffers reported when layers were offloaded (None: none)
    embedding: list[float] | None = None  # every input's vector (default: from its length)


class ScriptedRunner:
    """One fake runner: the handle the scheduler holds, and its own connection (`client`)."""

    def __init__(self, spec: RunnerSpec, threads: int, script: Script) -> None:
        self.spec = spec
        self.script = script
        self.threads = threads
        self.thread_history = [threads]  # every value set_threads was asked for, the first too
        self.pid: int | None = None  # no OS process behind it
        self.port: int | None = None
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self.loaded = False
        self.progress = 0.0
        self.payloads: list[dict[str, Any]] = []  # every completion request, in order
        self.active = 0  # streams open now
        self.finished = 0  # streams that sent their final message
        self.cancelled = 0  # streams the caller closed early
        self.terminated = False

    @property
    def client(self) -> ScriptedRunner:
        return self

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    # ------------------------------------------------------------------ lifecycle

    async def wait_ready(
        self, timeout: float, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, object]:
        script = self.script
        steps = script.load_steps or [1.0]
        try:
            async with asyncio.timeout(timeout):
                for step in steps:
                    await asyncio.sleep(script.load_delay / len(steps))
                    self._check_alive("exited while loading the model")
                    self.progress = step
                    if on_progress is not None:
                        on_progress(step)
                if script.load_gate is not None:
                    await script.load_gate.wait(lambda: not self.alive)
                    self._check_alive("exited while loading the model")
        except TimeoutError:
            await self.terminate()
            message = f"timed out after {timeout:.0f}s loading the scripted model"
            raise RunnerFailed(message) from None
        if script.load_error is not None:
            self._exit(1)
            raise RunnerFailed(script.load_error)
        self.loaded = True
        self.progress = 1.0
        if on_progress is not None:
            on_progress(1.0)
        return await self.health()

    async def terminate(self) -> int:
        self.terminated = True
        self._exit(0)
        return await asyncio.shield(self.exited)

    def crash(self, code: int = 1) -> None:
        """Die now, as a killed process would (callable from any thread)."""
        if threading.get_ident() == self._loop_thread:
            self._exit(code)
        else:
            self.loop.call_soon_threadsafe(self._exit, code)

    def _exit(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    def _check_alive(self, what: str = "lost the connection to the runner") -> None:
        if not self.alive:
            raise RunnerFailed(f"scripted runner {what}")

    # ------------------------------------------------------------------ connection

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self._check_alive()
        self.payloads.append(payload)
        script = self.script
        chunks = list(script.chunks)
        done_reason = script.done_reason
        num_predict = int(payload.get("options", {}).get("num_predict", -1))
        if 0 <= num_predict < len(chunks):
            chunks, done_reason = chunks[:num_predict], "length"
        self.active += 1
        finished = False
        try:
            for index, text in enumerate(chunks):
                if script.crash_after is not None and index == script.crash_after:
                    self._exit(1)
                if script.gate is not None and index == script.gate_after:
                    await script.gate.wait(lambda: not self.alive)
                if script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                self._check_alive()
                yield {"content": text}
            if script.crash_after is not None and script.crash_after >= len(chunks):
                self._exit(1)
            self._check_alive()
            finished = True
            yield {
                "done": True,
                "done_reason": done_reason,
                "prompt_eval_count": len(str(payload.get("prompt", ""))),
                "prompt_eval_duration": 1_000_000,
                "eval_count": len(chunks),
                "eval_duration": 1_000_000 * max(1, len(chunks)),
                **script.metrics,
            }
        finally:
            self.active -= 1
            if finished:
                self.finished += 1
            elif self.alive:
                self.cancelled += 1  # the caller left early

    async def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        self._check_alive()
        return ([1] if add_special else []) + [ord(c) for c in text]

    async def embed(self, texts: list[str], truncate: bool = True) -> dict[str, Any]:
        self._check_alive()
        if not self.spec.embedding:
            raise InvalidRequest("this runner was not started for embeddings")
        vectors = [self.script.embedding or [float(len(t)), 1.0] for t in texts]
        normalised = [[x / (sum(y * y for y in v) ** 0.5 or 1.0) for x in v] for v in vectors]
        return {"embeddings": normalised, "prompt_eval_count": sum(len(t) for t in texts)}

    async def set_threads(self, threads: int) -> int:
        self._check_alive()
        self.threads = threads
        self.thread_history.append(threads)
        return threads

    async def health(self, timeout: float | None = None) -> dict[str, Any]:
        self._check_alive()
        return {
            "status": "ok" if self.loaded else "loading",
            "progress": self.progress,
            "n_ctx": self.spec.ctx_size,
            "parallel": self.spec.parallel,
            "active": self.active,
            "queued": 0,
            "threads": self.threads,
            "memory_bytes": self.script.memory_bytes if self.loaded else 0,
            **self._gpu_health(),
        }

    def _gpu_health(self) -> dict[str, int]:
        """What a real runner says of its GPU part: the layers it was started with, and the
        scripted GPU buffer bytes once loaded."""
        if not self.loaded or self.spec.gpu_layers <= 0 or self.script.vram_bytes is None:
            return {}
        return {"vram_bytes": self.script.vram_bytes, "gpu_layers": self.spec.gpu_layers}


class ScriptedLauncher:
    """Starts `ScriptedRunner`s: the script of a model file if one was given, else `default`."""

    def __init__(self, default: Script | None = None) -> None:
        self.default = default or Script()
        self.scripts: dict[Path, Script] = {}
        self.launched: list[ScriptedRunner] = []
        self.launch_error: str | None = None  # launching fails at once (like a bad executable)

    def script(self, model_path: Path, script: Script) -> Script:
        """Use `script` for every later runner of the model file `model_path`."""
        self.scripts[model_path] = script
        return script

    async def launch(self, spec: RunnerSpec, *, threads: int) -> ScriptedRunner:
        if self.launch_error is not None:
            raise RunnerFailed(self.launch_error)
        runner = ScriptedRunner(spec, threads, self.scripts.get(spec.model_path, self.default))
        self.launched.append(runner)
        return runner

    def live(self, model_path: Path | None = None) -> list[ScriptedRunner]:
        """Runners not yet exited (of one model file, if given)."""
        return [
            r
            for r in self.launched
            if r.alive and (model_path is None or r.spec.model_path == model_path)
        ]
