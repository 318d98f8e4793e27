"""GPU detection on this CPU-only machine: the file check, the real probe subprocess (which must
say "no GPU" here), scripted probe answers through the same subprocess path, and its failures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hana_server.config import HanaSettings
from hana_server.gpu.detect import (
    DetectedGpu,
    GpuInfo,
    gpu_backend_libraries,
    llama_lib_dir,
    probe_command,
)

H100 = {
    "backend": "CUDA",
    "source": "ggml",
    "devices": [
        {
            "index": 0,
            "name": "CUDA0",
            "description": "NVIDIA H100 80GB HBM3",
            "free": 80 << 30,
            "total": 81 << 30,
        }
    ],
}


def printing(answer: object) -> list[str]:
    """A probe command that prints `answer` as the real probe prints its JSON line."""
    return [sys.executable, "-c", f"print({json.dumps(json.dumps(answer))})"]


@pytest.fixture
def cuda_lib_dir(tmp_path: Path) -> Path:
    """A library folder that looks like a CUDA build of llama-cpp-python."""
    (tmp_path / "libggml-cuda.so").write_bytes(b"")
    (tmp_path / "libllama.so").write_bytes(b"")
    return tmp_path


def test_this_builds_llama_cpp_python_has_no_gpu_backend_library() -> None:
    lib_dir = llama_lib_dir()
    assert lib_dir is not None and (lib_dir / "libllama.so").exists()
    assert gpu_backend_libraries(lib_dir) == []


def test_gpu_backend_libraries_are_found_by_name(cuda_lib_dir: Path, tmp_path: Path) -> None:
    (cuda_lib_dir / "libggml-vulkan.so.0").write_bytes(b"")
    assert gpu_backend_libraries(cuda_lib_dir) == ["ggml-cuda", "ggml-vulkan"]
    assert gpu_backend_libraries(tmp_path / "missing") == []
    assert gpu_backend_libraries(None) == []


async def test_auto_on_a_cpu_build_says_no_gpu_without_starting_the_probe(tmp_path: Path) -> None:
    # The command cannot start: had the probe run, the reason would say so.
    detector = DetectedGpu("auto", lib_dir=tmp_path, command=["/nonexistent/probe"])
    info = await detector.info()
    assert not info.available and info.backend is None
    assert "no GPU backend library" in info.reason


async def test_the_real_probe_says_no_gpu_offload_on_this_cpu_build() -> None:
    info = await DetectedGpu("probe", command=probe_command()).info()
    assert not info.available
    assert info.reason == "llama.cpp reports no GPU offload (CPU build)"


def test_ggml_device_registry_is_read_through_ctypes() -> None:
    # Same ctypes calls as on a GPU machine; this build registers only the CPU device. In a
    # subprocess, as the server does it (llama_cpp stays out of the test process).
    code = "from hana_server.gpu.probe import ggml_devices; print(repr(ggml_devices()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('', [])"


async def test_a_probe_answer_with_a_gpu_is_parsed(cuda_lib_dir: Path) -> None:
    detector = DetectedGpu("auto", lib_dir=cuda_lib_dir, command=printing(H100))
    info = await detector.info()
    assert info.available and info.backend == "CUDA" and info.source == "ggml"
    (device,) = info.devices
    assert (device.index, device.name) == (0, "CUDA0")
    assert (device.free, device.total) == (80 << 30, 81 << 30)
    assert "NVIDIA H100" in info.describe()
    assert info.to_json()["available"] is True
    assert await detector.info() is info  # detected once


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ([sys.executable, "-c", "print('not json')"], "GPU probe failed (exit code 0)"),
        ([sys.executable, "-c", "import sys; sys.exit('boom')"], "boom"),
        (printing({"devices": [{"index": 0}]}), "GPU probe failed"),
        ([sys.executable, "-c", "import time; time.sleep(30)"], "no answer within 1s"),
    ],
)
async def test_a_failing_probe_means_no_gpu_with_the_reason(
    cuda_lib_dir: Path, command: list[str], reason: str
) -> None:
    info = await DetectedGpu("auto", lib_dir=cuda_lib_dir, command=command, timeout=1.0).info()
    assert not info.available
    assert reason in info.reason


async def test_off_never_probes(cuda_lib_dir: Path) -> None:
    info = await DetectedGpu("off", lib_dir=cuda_lib_dir, command=printing(H100)).info()
    assert not info.available and "off" in info.reason


def test_gpu_info_refuses_a_malformed_answer() -> None:
    with pytest.raises(ValueError):
        GpuInfo.from_json([])  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        GpuInfo.from_json({"backend": "CUDA", "devices": [{"index": 0}]})
    assert not GpuInfo.from_json({"backend": "CUDA", "devices": []}).available


def test_gpu_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANA_GPU", "off")
    monkeypatch.setenv("OLLAMA_GPU_OVERHEAD", str(1 << 30))
    settings = HanaSettings()
    assert (settings.gpu, settings.gpu_overhead) == ("off", 1 << 30)
    monkeypatch.setenv("HANA_GPU", "nonsense")
    assert HanaSettings().gpu == "auto"


async def test_close_stops_a_detection_still_running(cuda_lib_dir: Path) -> None:
    # At shutdown nothing may be left pending ("Task was destroyed but it is pending").
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    detector = DetectedGpu("auto", lib_dir=cuda_lib_dir, command=slow, timeout=60.0)
    detector.start()
    task = detector._task
    assert task is not None
    await asyncio.sleep(0.2)
    assert not task.done()
    probes = [p for p in psutil.Process().children() if "time.sleep(30)" in " ".join(p.cmdline())]
    assert len(probes) == 1
    detector.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    probes[0].wait(timeout=10)  # the probe process is killed, not left to run
