"""What the scheduler keeps per runner and per request: the runner's record, a waiting request,
the lease a request holds on a runner, and keep-alive arithmetic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hana_protocol.durations import FOREVER, MAX_DURATION_SECONDS
from hana_protocol.errors import InvalidRequest
from hana_server.gpu.placement import Placement
from hana_server.launchers.protocol import LaunchedRunner, RunnerConnection, RunnerSpec
from hana_server.snapshots import RunnerSnapshot
from hana_server.store.store import Model

FAR_FUTURE = datetime(2318, 1, 1, tzinfo=UTC)  # what Ollama shows for "forever"


def checked_keep_alive(keep_alive: float | None) -> float | None:
    """`keep_alive` if it is one the scheduler can hold: None, 0..Go's longest duration, or
    FOREVER. Anything else (NaN, a negative, a finite value past ~292 years) is refused before
    any state changes, so a bad value can never be stored on a runner."""
    if keep_alive is None or keep_alive == FOREVER or 0 <= keep_alive <= MAX_DURATION_SECONDS:
        return keep_alive
    raise InvalidRequest(f"invalid keep_alive: {keep_alive!r}")


def expiry_time(keep_alive: float) -> datetime:
    """When a runner idle from now with `keep_alive` goes away; FAR_FUTURE for forever. Never
    overflows: a keep_alive past FAR_FUTURE shows as FAR_FUTURE."""
    now = datetime.now(UTC)
    if not keep_alive > 0:
        return now
    if keep_alive == FOREVER or keep_alive >= (FAR_FUTURE - now).total_seconds():
        return FAR_FUTURE
    return now + timedelta(seconds=keep_alive)


@dataclass
class Waiter:
    """A request waiting for a slot on a runner of `spec`."""

    model: Model
    spec: RunnerSpec
    keep_alive: float | None
    future: asyncio.Future[Lease]
    since: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class LoadedRunner:
    """The scheduler's record of one runner it launched (loading, serving or going away)."""

    id: int
    model: Model
    spec: RunnerSpec
    size: int
    keep_alive: float
    phase: str = "loading"  # loading | ready | draining | unloading
    launched: LaunchedRunner | None = None
    active_requests: int = 0  # leases held on it
    threads: int = 1
    progress: float = 0.0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: datetime | None = None
    expiry: asyncio.TimerHandle | None = None
    load_task: asyncio.Task[None] | None = None
    tokens_per_second: float | None = None
    placement: Placement = field(default_factory=Placement)
    size_vram: int = 0  # of `size`, the bytes on GPU `placement.device`

    @property
    def on_cpu(self) -> bool:
        """Computes on the CPU (not every layer offloaded): the thread budget counts it."""
        return not self.placement.full

    @property
    def idle(self) -> bool:
        return self.phase == "ready" and self.active_requests == 0

    @property
    def pinned(self) -> bool:
        return self.keep_alive == FOREVER

    def snapshot(self, queued: int) -> RunnerSnapshot:
        """How `/api/ps`, the events and the panel see this runner."""
        launched = self.launched
        return RunnerSnapshot(
            model=self.model,
            phase=self.phase,
            active_requests=self.active_requests,
            queued=queued,
            num_parallel=self.spec.parallel,
            context_length=self.spec.ctx_size,
            size=self.size,
            expires_at=self.expires_at or datetime.now(UTC),
            keep_alive=self.keep_alive,
            pid=launched.pid if launched else None,
            port=launched.port if launched else None,
            threads=self.threads,
            load_progress=self.progress,
            tokens_per_second=self.tokens_per_second,
            size_vram=self.size_vram,
            gpu_layers=self.spec.gpu_layers,
        )


class Lease:
    """The right to send requests to one runner; release it (or use `async with`) when done."""

    def __init__(self, runner: LoadedRunner, on_release: Callable[[LoadedRunner], None]) -> None:
        self.runner = runner
        self._on_release = on_release
        self.load_duration = 0.0  # seconds this request waited for its runner to load
        self._released = False

    @property
    def client(self) -> RunnerConnection:
        assert self.runner.launched is not None
        return self.runner.launched.client

    @property
    def context_length(self) -> int:
        return self.runner.spec.ctx_size

    def record_speed(self, eval_count: int, eval_duration_ns: int) -> None:
        if eval_count > 1 and eval_duration_ns > 0:
            self.runner.tokens_per_second = eval_count / (eval_duration_ns / 1e9)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._on_release(self.runner)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
