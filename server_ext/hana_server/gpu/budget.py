"""GPU memory as the scheduler counts it: detected once, then each GPU's free bytes less what
hana's own runners hold there, and a request's `num_gpu` made what the build can honour."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from hana_server.gpu.detect import FixedGpu, GpuInfo, GpuProvider
from hana_server.gpu.placement import requested_num_gpu

log = logging.getLogger("hana.gpu")


class GpuBudget:
    """The scheduler's view of the GPUs (`provider` detects them; none: CPU only)."""

    def __init__(self, provider: GpuProvider | None = None, overhead: int = 0) -> None:
        self.provider: GpuProvider = provider or FixedGpu()
        self.overhead = max(0, overhead)  # bytes per GPU left to other programs
        self.info: GpuInfo | None = None  # None until detected
        self._ignored: set[tuple[str, int]] = set()

    async def ensure(self) -> GpuInfo:
        """Detect once (the first request waits for it; later ones do not await at all)."""
        if self.info is None:
            self.info = await self.provider.info()
        return self.info

    @property
    def available(self) -> bool:
        return self.info is not None and self.info.available

    def num_gpu(
        self, model: str, options: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> int | None:
        """The request's num_gpu (None: as many as fit); where there is no GPU it is accepted,
        logged once per model and value, and ignored (None)."""
        wanted = requested_num_gpu(options, parameters)
        if self.available or wanted is None:
            return wanted
        if (model, wanted) not in self._ignored:
            self._ignored.add((model, wanted))
            reason = self.info.reason if self.info is not None else "not detected yet"
            log.info("num_gpu %d for %s ignored: %s", wanted, model, reason)
        return None

    def free(self, held: Iterable[tuple[int, int]]) -> dict[int, int]:
        """Bytes each GPU has for a new runner: free at detection, less the overhead, less what
        `held` ((device, bytes) of live runners) takes. Empty where there is no GPU."""
        if self.info is None or not self.info.available:
            return {}
        room = {d.index: d.free - self.overhead for d in self.info.devices}
        for device, nbytes in held:
            if device in room:
                room[device] -= nbytes
        return {device: max(0, nbytes) for device, nbytes in room.items()}

    def status(self) -> dict[str, Any]:
        """For /api/hana/status."""
        if self.info is None:
            return {"available": False, "reason": "not detected yet", "devices": []}
        return {**self.info.to_json(), "overhead": self.overhead}
