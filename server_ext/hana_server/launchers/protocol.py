"""The seam between the scheduler and whatever runs a model: what a runner is started with
(`RunnerSpec`), and the protocols a launcher, the runner it starts and that runner's connection
follow. The scheduler only ever sees these types; a local process (`ProcessLauncher`) is one
implementation, the tests' scripted runner another.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner is started with; a request fits a runner whose spec covers it."""

    model_path: Path
    ctx_size: int  # per sequence
    parallel: int
    embedding: bool
    swa_full: bool
    num_gpu: int | None = None  # what the request asked for (None: as many layers as fit)
    gpu_layers: int = 0  # what the scheduler placed on the GPU (llama.cpp's n_gpu_layers)
    main_gpu: int = 0  # the GPU those layers go to

    def covers(self, other: RunnerSpec) -> bool:
        # A smaller num_ctx is served by a bigger loaded context instead of reloading (ollama#8903).
        # An explicit num_gpu needs a runner started for it; "as many as fit" takes any.
        return (
            self.model_path == other.model_path
            and self.embedding == other.embedding
            and self.ctx_size >= other.ctx_size
            and (other.num_gpu is None or other.num_gpu == self.num_gpu)
        )


class RunnerConnection(Protocol):
    """Requests to one started runner. Errors are hana errors: `InvalidRequest` for the request's
    fault, `RunnerFailed` for everything else (an error inside a stream included)."""

    def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`{"content": str}` messages, then the final `{"done": true, ...metrics}`; closing the
        iterator early (break, aclose, cancellation) makes the runner drop the sequence."""
        ...

    async def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]: ...

    async def embed(self, texts: list[str], truncate: bool = True) -> dict[str, Any]:
        """`{"embeddings": [[float]], "prompt_eval_count": int}`."""
        ...

    async def set_threads(self, threads: int) -> int: ...

    async def health(self, timeout: float | None = None) -> dict[str, Any]: ...


class LaunchedRunner(Protocol):
    """A runner a launcher started: its identity, its connection, its readiness and its end."""

    # Read-only properties, so that an implementation may narrow them (a process has a pid).
    @property
    def pid(self) -> int | None:
        """The OS process, where there is one."""
        ...

    @property
    def port(self) -> int | None: ...

    @property
    def client(self) -> RunnerConnection: ...

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves (exit code) when the runner is gone, a crash included."""
        ...

    async def wait_ready(
        self, timeout: float, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, object]:
        """Return once the model is loaded; raise `RunnerFailed` (and stop it) if it cannot be."""
        ...

    async def terminate(self) -> int:
        """Stop the runner and free what it holds; idempotent; returns the exit code."""
        ...


class RunnerLauncher(Protocol):
    """Starts runners; the scheduler receives one and never starts anything itself."""

    async def launch(self, spec: RunnerSpec, *, threads: int) -> LaunchedRunner:
        """Start a runner for `spec` with `threads` compute threads; it may still be loading."""
        ...
