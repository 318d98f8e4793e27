"""Which GPUs the runners can offload to: `GpuInfo`, and the providers the scheduler asks for it.

Decision (see docs/internals.md): the server process never loads llama.cpp or a GPU driver. A
CUDA context costs a few hundred MiB of GPU memory for as long as the process lives, and the
server lives as long as Jupyter. So detection is two steps, both off the event loop:
1. a file check (microseconds): does llama-cpp-python's library folder hold a GPU backend
   (libggml-cuda, -vulkan, -metal, -hip, ...)? A CPU build has none, and detection ends there;
2. only then `python -m hana_server.gpu.probe` in a subprocess, which asks llama.cpp itself
   (`llama_supports_gpu_offload`, ggml's device registry and its free/total memory) and exits,
   taking its GPU context with it.
The result is measured once, before the first runner starts; the scheduler then counts what its
own runners take from the free memory seen (other programs that start using the GPU later are
not seen: `gpu_overhead` keeps room for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("hana.gpu")

PROBE_TIMEOUT = 60.0  # the first CUDA initialisation on a cold machine can take seconds
# ggml's GPU backends as shared libraries (llama-cpp-python builds them as lib/libggml-<name>.so).
GPU_BACKEND_LIBRARIES = (
    "ggml-cuda",
    "ggml-vulkan",
    "ggml-metal",
    "ggml-hip",
    "ggml-musa",
    "ggml-sycl",
    "ggml-opencl",
    "ggml-cann",
)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as llama.cpp numbers it (`index` is what `main_gpu` selects)."""

    index: int
    name: str  # ggml's device name, e.g. "CUDA0"
    description: str  # e.g. "NVIDIA H100 80GB HBM3"
    free: int  # bytes free when detected
    total: int


@dataclass(frozen=True)
class GpuInfo:
    """What detection found: a backend and its devices, or why there is no GPU."""

    backend: str | None  # e.g. "CUDA"; None: no GPU offload
    devices: tuple[GpuDevice, ...] = ()
    reason: str = ""  # why there is no GPU, for the log and /api/hana/status
    source: str = ""  # how memory was measured: "ggml", "nvidia-smi", "fixed"

    @property
    def available(self) -> bool:
        return self.backend is not None and bool(self.devices)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "available": self.available}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuInfo:
        """Parse the probe's answer; anything malformed raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError("GPU probe answer is not an object")
        devices = []
        for item in data.get("devices") or []:
            device = GpuDevice(
                index=int(item["index"]),
                name=str(item["name"]),
                description=str(item.get("description", "")),
                free=max(0, int(item["free"])),
                total=max(0, int(item["total"])),
            )
            devices.append(device)
        backend = data.get("backend")
        return cls(
            backend=str(backend) if backend else None,
            devices=tuple(devices),
            reason=str(data.get("reason") or ""),
            source=str(data.get("source") or ""),
        )

    def describe(self) -> str:
        """One log line."""
        if not self.available:
            return f"no GPU offload: {self.reason or 'no GPU found'}"
        parts = ", ".join(
            f"{d.name} {d.description} ({d.free / 2**30:.1f} GiB free of {d.total / 2**30:.1f})"
            for d in self.devices
        )
        return f"GPU offload with {self.backend}: {parts}"


NO_GPU = GpuInfo(None, reason="GPU offload is off")


class GpuProvider(Protocol):
    """What the scheduler receives: the GPUs, detected at most once (tests pass `FixedGpu`)."""

    async def info(self) -> GpuInfo: ...

    def close(self) -> None:
        """Stop a detection still running (at shutdown)."""


@dataclass
class FixedGpu:
    """A provider with a given answer: `gpu = off`, and tests that script a GPU."""

    fixed: GpuInfo = field(default_factory=lambda: NO_GPU)

    async def info(self) -> GpuInfo:
        return self.fixed

    def close(self) -> None:
        pass  # nothing runs


def llama_lib_dir() -> Path | None:
    """Where llama-cpp-python loads llama.cpp from ($LLAMA_CPP_LIB_PATH, else its lib/ folder),
    found without importing it."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def gpu_backend_libraries(lib_dir: Path | None) -> list[str]:
    """The GPU backends whose shared library is in `lib_dir` (e.g. ["ggml-cuda"])."""
    if lib_dir is None or not lib_dir.is_dir():
        return []
    found = []
    for name in GPU_BACKEND_LIBRARIES:
        if any(lib_dir.glob(f"lib{name}.*")) or any(lib_dir.glob(f"{name}.dll")):
            found.append(name)
    return found


def probe_command() -> list[str]:
    """The probe subprocess: isolated like a runner (no cwd on sys.path)."""
    return [sys.executable, "-P", "-m", "hana_server.gpu.probe"]


async def run_probe(command: list[str], timeout: float = PROBE_TIMEOUT) -> GpuInfo:
    """Run the probe subprocess and parse its JSON line; never raises (a failed probe means
    no GPU, with the reason)."""
    from hana_server.launchers.process import RUNNER_CWD, isolated_env

    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=RUNNER_CWD,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=isolated_env(dict(os.environ)),
        )
    except OSError as error:
        return GpuInfo(None, reason=f"GPU probe could not start: {error}")
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return GpuInfo(None, reason=f"GPU probe gave no answer within {timeout:.0f}s")
    except asyncio.CancelledError:  # shutdown: leave no probe process behind
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    lines = [line for line in stdout.decode(errors="replace").splitlines() if line.strip()]
    try:
        return GpuInfo.from_json(json.loads(lines[-1]))
    except (IndexError, ValueError, KeyError, TypeError):
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return GpuInfo(
            None, reason=f"GPU probe failed (exit code {process.returncode}): {tail[0][:300]}"
        )


class DetectedGpu:
    """The real provider: detects once (see the module docstring), on first use or `start()`.

    `mode`: "auto" (probe only where a GPU backend library is installed), "probe" (always ask
    llama.cpp: for a build that links its GPU backend statically), "off"."""

    def __init__(
        self,
        mode: str = "auto",
        *,
        lib_dir: Path | None = None,
        command: list[str] | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.mode = mode
        self.lib_dir = lib_dir
        self.command = command or probe_command()
        self.timeout = timeout
        self._task: asyncio.Task[GpuInfo] | None = None

    def start(self) -> None:
        """Begin detecting in the background (the first load then does not wait for it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._detect())

    async def info(self) -> GpuInfo:
        self.start()
        assert self._task is not None
        return await asyncio.shield(self._task)

    def close(self) -> None:
        """Stop a detection still running (at shutdown); a probe process ends by itself."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _detect(self) -> GpuInfo:
        info = await self._find()
        log.info("hana: %s", info.describe())
        return info

    async def _find(self) -> GpuInfo:
        if self.mode == "off":
            return GpuInfo(None, reason="turned off (gpu = off)")
        if self.mode == "auto":
            lib_dir = self.lib_dir or await asyncio.to_thread(llama_lib_dir)
            libraries = await asyncio.to_thread(gpu_backend_libraries, lib_dir)
            if not libraries:
                return GpuInfo(
                    None, reason=f"llama-cpp-python has no GPU backend library in {lib_dir}"
                )
        return await run_probe(self.command, self.timeout)
