"""What the scheduler shows of itself: immutable snapshots of its runners and waiting requests.

The scheduler builds them; the API (`/api/ps`, `/api/hana/status`, `/api/hana/events`) turns them
into JSON, so the state owner never formats anything for a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hana_protocol.durations import FOREVER
from hana_server.store.store import Model


@dataclass(frozen=True)
class RunnerSnapshot:
    """One runner as it was at one moment."""

    model: Model
    phase: str  # the scheduler's own: loading | ready | draining | unloading
    active_requests: int  # leases held on it now
    queued: int  # requests waiting for a slot on it
    num_parallel: int
    context_length: int
    size: int  # bytes the memory budget counts for it
    expires_at: datetime
    keep_alive: float  # seconds; FOREVER when pinned
    pid: int | None
    port: int | None
    threads: int
    load_progress: float
    tokens_per_second: float | None
    size_vram: int = 0  # of `size`, the bytes on the GPU
    gpu_layers: int = 0  # layers offloaded (block_count + 1 = all)

    @property
    def name(self) -> str:
        return self.model.name.display

    @property
    def pinned(self) -> bool:
        return self.keep_alive == FOREVER

    @property
    def state(self) -> str:
        """What users see: loading, ready, busy (ready with active requests) or expiring."""
        if self.phase == "ready":
            return "busy" if self.active_requests else "ready"
        if self.phase in ("draining", "unloading"):
            return "expiring"
        return self.phase


@dataclass(frozen=True)
class WaitingSnapshot:
    """Requests waiting for a model that has no runner yet."""

    name: str
    queued: int
