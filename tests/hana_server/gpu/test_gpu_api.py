"""size_vram and num_gpu through real HTTP: the scripted server with a scripted GPU (its runners
report offloaded layers and GPU buffers), and with this machine's own (CPU-only) detection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hana_server.gpu.detect import FixedGpu, GpuDevice, GpuInfo
from hana_server.gpu.placement import GPU_CONTEXT_BYTES
from scripted_runner import Script
from scripted_server import ScriptedServer

TINY_LAYERS = 2 + 1  # tiny_gguf's two blocks and the output layer

H100 = GpuInfo(
    "CUDA", (GpuDevice(0, "CUDA0", "scripted H100", 70 << 30, 80 << 30),), source="fixed"
)


def generate(server: ScriptedServer, model: str, **options: Any) -> None:
    body = {
        "model": model,
        "prompt": "hi",
        "stream": False,
        "options": {"num_predict": 2, **options},
    }
    response = server.http.post("/api/generate", json=body)
    assert response.status_code == 200, response.text


def test_ps_reports_the_vram_the_runner_measured(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = start_scripted_server(gpu=FixedGpu(H100))
    server.create_tiny("tiny")
    server.script("tiny", Script(vram_bytes=42 << 20))
    generate(server, "tiny")
    (entry,) = server.ps()
    assert entry["size_vram"] == (42 << 20) + GPU_CONTEXT_BYTES
    assert entry["gpu_layers"] == TINY_LAYERS
    assert entry["size"] > entry["size_vram"]
    (runner,) = server.launcher.live()
    assert runner.spec.gpu_layers == TINY_LAYERS
    status = server.http.get("/api/hana/status").json()
    assert status["gpu"]["available"] is True
    assert status["gpu"]["devices"][0]["description"] == "scripted H100"


def test_a_modelfile_num_gpu_zero_keeps_the_model_off_the_gpu(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = start_scripted_server(gpu=FixedGpu(H100))
    server.create_tiny("cpu-only", parameters={"num_gpu": 0})
    server.create_tiny("partial", seed=1, parameters={"num_gpu": 1})
    generate(server, "cpu-only")
    generate(server, "partial")
    by_name = {e["name"]: e for e in server.ps()}
    assert by_name["cpu-only:latest"]["size_vram"] == 0
    assert by_name["cpu-only:latest"]["gpu_layers"] == 0
    assert by_name["partial:latest"]["gpu_layers"] == 1
    assert by_name["partial:latest"]["size_vram"] > GPU_CONTEXT_BYTES


def test_on_this_cpu_build_num_gpu_is_accepted_and_changes_nothing(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = start_scripted_server()  # the real detection: no GPU backend here
    server.create_tiny("tiny")
    generate(server, "tiny", num_gpu=99)
    (entry,) = server.ps()
    assert (entry["size_vram"], entry["gpu_layers"]) == (0, 0)
    status = server.http.get("/api/hana/status").json()["gpu"]
    assert status["available"] is False and "no GPU backend library" in status["reason"]
