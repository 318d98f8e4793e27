"""The runner's GPU side on this CPU-only build: --gpu-layers is accepted and loads on the CPU,
and the llama.cpp log is split into host and GPU buffers (the lines a CUDA build prints)."""

from __future__ import annotations

from pathlib import Path

from hana_server.runner.model import LlamaLog
from hana_server.runner.settings import parse_args
from runner_harness import StartRunner

INFO = 2  # ggml's log level for these lines

# As llama.cpp 0.3.36's CUDA build logs a partly offloaded model (checked against its source).
CUDA_LOAD_LOG = [
    "load_tensors: offloading 18 repeating layers to GPU\n",
    "load_tensors: offloaded 19/19 layers to GPU\n",
    "load_tensors:        CUDA0 model buffer size =   100.00 MiB\n",
    "load_tensors:   CPU_Mapped model buffer size =    50.00 MiB\n",
    "llama_context:  CUDA_Host  output buffer size =     1.00 MiB\n",
    "llama_kv_cache:      CUDA0 KV buffer size =     8.00 MiB\n",
    "sched_reserve:      CUDA0 compute buffer size =    20.50 MiB\n",
    "sched_reserve:  CUDA_Host compute buffer size =     4.00 MiB\n",
]


def test_gpu_buffers_are_counted_apart_from_host_buffers() -> None:
    log = LlamaLog()
    for line in CUDA_LOAD_LOG:
        log._on_message(INFO, line.encode(), None)
    assert log.gpu_buffer_bytes == int((100 + 8 + 20.5) * 2**20)
    assert log.buffer_bytes == (50 + 1 + 4) * 2**20
    assert log.gpu_layers == 19


def test_gpu_layers_and_main_gpu_are_runner_arguments() -> None:
    settings = parse_args(["--model", "m.gguf", "--ctx-size", "8", "--gpu-layers", "5"])
    assert (settings.gpu_layers, settings.main_gpu) == (5, 0)
    settings = parse_args(
        ["--model", "m", "--ctx-size", "8", "--gpu-layers", "-1", "--main-gpu", "1"]
    )
    assert (settings.gpu_layers, settings.main_gpu) == (0, 1)


async def test_gpu_layers_on_a_cpu_build_load_on_the_cpu(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, gpu_layers=3)
    health = await runner.client.health()
    assert health["status"] == "ok" and health["memory_bytes"] > 0
    assert (health["vram_bytes"], health["gpu_layers"]) == (0, 0)
    answer = [
        c async for c in runner.client.completion({"prompt": "hi", "options": {"num_predict": 3}})
    ]
    assert answer[-1]["done"] and answer[-1]["eval_count"] == 3
