"""One concurrency gate per upstream: at most `limit` requests in flight, the rest queued in
arrival order, and the scheduler's 503 rule (a full queue refuses at once). Nothing is loaded or
unloaded: the upstream owns its models."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from hana_protocol.errors import RunnerFailed, ServerBusy


class Slot:
    """A request's place at an upstream; `release()` is idempotent (the answer's every exit
    calls it). Quacks like the scheduler's Lease where an answer stream uses one."""

    load_duration = 0.0  # nothing is loaded for a remote model

    def __init__(self, gate: UpstreamGate, model: str) -> None:
        self.gate = gate
        self.model = model
        self.released = False

    def record_speed(self, eval_count: int, eval_duration_ns: int) -> None:
        if eval_count > 0 and eval_duration_ns > 0:
            self.gate.speeds[self.model] = eval_count / (eval_duration_ns / 1e9)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.release(self.model)


@dataclass
class _Waiter:
    model: str
    future: asyncio.Future[Slot]


class UpstreamGate:
    """Admission to one upstream host."""

    def __init__(self, host: str, limit: int, max_queue: int, changed: Callable[[], None]) -> None:
        self.host = host
        self.limit = max(1, limit)
        self.max_queue = max_queue
        self.changed = changed
        self.active: Counter[str] = Counter()  # in flight, per local model name
        self.speeds: dict[str, float] = {}
        self._waiters: deque[_Waiter] = deque()
        self.closed = False

    @property
    def in_flight(self) -> int:
        return sum(self.active.values())

    def queued(self, model: str | None = None) -> int:
        return sum(1 for w in self._waiters if model is None or w.model == model)

    async def acquire(self, model: str) -> Slot:
        """A slot now, or after the requests before it; cancel the awaiting task to give up."""
        if self.closed:
            raise RunnerFailed("server is shutting down")
        if self.in_flight < self.limit and not self._waiters:
            return self._admit(model)
        if len(self._waiters) >= self.max_queue:
            raise ServerBusy()
        waiter = _Waiter(model, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self.changed()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()  # handed over as the client left
            self.changed()
            raise

    def _admit(self, model: str) -> Slot:
        self.active[model] += 1
        self.changed()
        return Slot(self, model)

    def release(self, model: str) -> None:
        self.active[model] -= 1
        if self.active[model] <= 0:
            del self.active[model]
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(self._admit(waiter.model))
        self.changed()

    def close(self) -> None:
        self.closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(RunnerFailed("server is shutting down"))
        self._waiters.clear()
