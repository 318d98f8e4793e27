"""Memory accounting: what a runner will need, and what the machine lets all runners use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hana_server.launchers.protocol import RunnerSpec
    from hana_server.store.gguf_info import GGUFInfo

RESERVE = 1 << 30  # left for the notebook server, kernels and the page cache
COMPUTE_OVERHEAD = 64 << 20  # llama.cpp compute buffers for small batches on CPU


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (cgroup limit applied when lower), in bytes."""
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        return 8 << 30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        usage = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, int(limit) - usage)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def estimate_runner_bytes(info: GGUFInfo, spec: RunnerSpec) -> int:
    """Weights + f16 KV for num_ctx x parallel (SWA layers full-size) + compute buffers."""
    kv = info.kv_bytes_per_token() * spec.ctx_size * spec.parallel
    return int(info.file_size + kv + COMPUTE_OVERHEAD)


class MemoryBudget:
    """Bytes all runners may use together: configured, or available at start minus a reserve."""

    def __init__(self, configured: int = 0) -> None:
        self._total = configured if configured > 0 else max(available_memory() - RESERVE, 1 << 30)

    def total(self) -> int:
        return self._total
