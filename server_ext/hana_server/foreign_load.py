"""`ForeignLoad`: how many of this server's cores other programs keep busy, so that runners
compute on the rest.

llama.cpp's compute threads meet at a barrier after every operation of the graph (hundreds per
token). A thread that shares its core with someone else's work (a notebook kernel crunching
numbers, a build) arrives late at each of them and its partners wait, spinning (runner/
priority.py): on 2 cores with one core kept busy by another program, gemma3:270m decoded under
1 tok/s with 2 spinning threads, 44 with 2 sleeping ones and 48.3 with 1 thread (the same
runner on the quiet machine: ~70 with 2). The scheduler therefore gives runners
`cores - reserved` threads, where `reserved` follows this estimate (docs/performance.md).

Estimate: over each interval, the busy time of the CPUs this process may run on (/proc/stat via
psutil) minus the CPU time of this server and its runners, in cores, smoothed; `reserved` moves
only when the estimate is clearly past the next whole core (hysteresis), so a short burst or
the bench client's own work does not make threads flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable

import psutil

from hana_server.launchers.cpu import affinity_cpus, granted_cpus

log = logging.getLogger("hana.scheduler")

SMOOTHING = 0.5  # weight of the newest sample
HYSTERESIS = 0.6  # cores the estimate must be away from `reserved` before it moves


def measurable() -> bool:
    """Whether the CPUs we may run on are ours to count: not when a cgroup quota narrower than
    the affinity mask is what limits us (a container on a big host sees the host's CPUs, busy
    with other tenants' work that the quota already keeps apart)."""
    return granted_cpus() == affinity_cpus()


class ForeignLoad:
    """Call `update(hana_pids)` every half second or so; read `reserved` (cores to leave)."""

    def __init__(self, cpus: Iterable[int] | None = None) -> None:
        if cpus is None:
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self._cpus = sorted(cpus) if cpus is not None else None
        self._busy: float | None = None  # busy seconds of our CPUs at the last sample
        self._own: dict[int, float] = {}  # CPU seconds of each hana process at the last sample
        self._wall: float | None = None
        self.estimate = 0.0  # foreign cores, smoothed
        self.reserved = 0
        self.changed = False  # whether the last update moved `reserved`

    def restart(self) -> None:
        """Forget the last sample (after a pause): the next update only takes a new one."""
        self._busy = self._wall = None

    def update(self, hana_pids: Iterable[int], now: float) -> None:
        """Take a sample at `now` (monotonic seconds); sets `changed`."""
        self.changed = False
        busy = self._busy_seconds()
        own = _cpu_seconds(hana_pids)
        if self._busy is None or self._wall is None or now <= self._wall:
            self._busy, self._own, self._wall = busy, own, now
            return
        # A process seen for the first time counts from 0: its whole time is this interval's.
        own_delta = sum(seconds - self._own.get(pid, 0.0) for pid, seconds in own.items())
        foreign = max(0.0, (busy - self._busy - own_delta) / (now - self._wall))
        self._busy, self._own, self._wall = busy, own, now
        self.estimate = SMOOTHING * foreign + (1 - SMOOTHING) * self.estimate
        if abs(self.estimate - self.reserved) >= HYSTERESIS:
            reserved = max(0, math.floor(self.estimate + 1 - HYSTERESIS))
            self.changed = reserved != self.reserved
            self.reserved = reserved

    def _busy_seconds(self) -> float:
        per_cpu = psutil.cpu_times(percpu=True)
        if self._cpus is not None:
            per_cpu = [per_cpu[i] for i in self._cpus if i < len(per_cpu)]
        # Busy: what processes and the kernel did. Idle, iowait and the hypervisor's steal are
        # time nobody here computed.
        return sum(
            t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
            for t in per_cpu
        )


def _cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone since: its last interval is lost, smoothing absorbs that
        seconds[pid] = times.user + times.system
    return seconds


class LoadWatch:
    """Samples a ForeignLoad every `interval` seconds while `busy()` holds, and calls
    `on_change` when its `reserved` cores change. `start()` is cheap and idempotent: the
    scheduler calls it whenever runners start computing; the task ends when they stop."""

    def __init__(
        self,
        load: ForeignLoad,
        *,
        busy: Callable[[], bool],
        pids: Callable[[], list[int]],
        on_change: Callable[[], None],
        interval: float = 0.5,
    ) -> None:
        self.load = load
        self._busy, self._pids, self._on_change = busy, pids, on_change
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.load.restart()
        while self._busy():
            self.load.update([os.getpid(), *self._pids()], loop.time())
            if self.load.changed:
                log.info(
                    "other programs keep ~%.1f cores busy: runners leave %d core(s) to them",
                    self.load.estimate,
                    self.load.reserved,
                )
                self._on_change()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
