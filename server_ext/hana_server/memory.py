"""Memory accounting: what a runner will need, and what the machine lets all runners use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hana_protocol.options import MAX_STOP_LENGTH, MAX_STOP_STRINGS

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


def sequence_state_bytes(info: GGUFInfo, spec: RunnerSpec) -> int:
    """What one sequence's options can make the runner hold besides the KV cache, at most: the
    grammar's candidate array (12 bytes per vocabulary entry), the repetition-penalty ring
    (repeat_last_n is clamped to the context) and the stop strings' matchers (bounded in
    hana_protocol.options; a character and a 4-byte table entry each)."""
    stops = MAX_STOP_STRINGS * MAX_STOP_LENGTH * (4 + 4)
    return 12 * info.vocab_size + 4 * spec.ctx_size + stops


def estimate_runner_bytes(info: GGUFInfo, spec: RunnerSpec) -> int:
    """Weights + f16 KV for num_ctx x parallel (SWA layers full-size) + compute buffers + what
    each sequence's options may add."""
    kv = info.kv_bytes_per_token() * spec.ctx_size * spec.parallel
    sequences = sequence_state_bytes(info, spec) * spec.parallel
    return int(info.file_size + kv + COMPUTE_OVERHEAD + sequences)


class MemoryBudget:
    """Bytes all runners may use together: configured, or available at start minus a reserve."""

    def __init__(self, configured: int = 0) -> None:
        self._total = configured if configured > 0 else max(available_memory() - RESERVE, 1 << 30)

    def total(self) -> int:
        return self._total
