"""The placement decision and the scheduler's GPU accounting, on a scripted GPU (`FixedGpu`) and
scripted runners: how many layers of which model go where for a reported free VRAM, two models on
one GPU, eviction by GPU memory, num_gpu, the host budget and the thread budget of the CPU part."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hana_server.gpu.detect import NO_GPU, FixedGpu, GpuDevice, GpuInfo
from hana_server.gpu.placement import GPU_CONTEXT_BYTES, layer_costs, place, requested_num_gpu
from hana_server.launchers.protocol import RunnerSpec
from hana_server.memory import MemoryBudget, estimate_runner_bytes
from hana_server.scheduler import Scheduler
from hana_server.snapshots import RunnerSnapshot
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.store import Model, ModelStore
from scripted_runner import Script, ScriptedLauncher
from tiny_gguf import write_tiny_gguf

from hana_protocol.errors import ModelTooLarge

N_LAYERS = 4
TOTAL = N_LAYERS + 1  # llama.cpp counts the output layer as one more


def spec_of(
    path: Path, ctx: int = 256, parallel: int = 1, num_gpu: int | None = None
) -> RunnerSpec:
    return RunnerSpec(path, ctx, parallel, embedding=False, swa_full=False, num_gpu=num_gpu)


def one_gpu(free: int, index: int = 0) -> GpuInfo:
    device = GpuDevice(index, f"CUDA{index}", "scripted GPU", free, free + (1 << 30))
    return GpuInfo("CUDA", (device,), source="fixed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """Models a, b and c: 4-layer tiny GGUFs of different widths (so different layer sizes)."""
    root = tmp_path_factory.mktemp("gpu")
    store = ModelStore(root / "models")
    found = {}
    for seed, (name, width) in enumerate((("a", 64), ("b", 128), ("c", 96))):
        path = write_tiny_gguf(root / f"{name}.gguf", seed=seed, n_embd=width, n_layers=N_LAYERS)
        found[name] = store.create(name, model_digest=store.import_file(path))
    return found


def info_of(model: Model) -> GGUFInfo:
    return GGUFInfo.read(model.model_path)


def vram(model: Model, layers: int, ctx: int = 256, parallel: int = 1) -> int:
    """What `layers` layers of `model` take on the GPU, by the placement's own cost model."""
    return layer_costs(info_of(model), spec_of(model.model_path, ctx, parallel)).vram(layers)


# ------------------------------------------------------------------------- the decision


def test_layer_costs_come_from_the_tensor_sizes_and_the_kv_cache(models: Any) -> None:
    info = info_of(models["a"])
    costs = layer_costs(info, spec_of(models["a"].model_path, ctx=256, parallel=2))
    weights = 4 * 64 * 64 * 4 + 3 * 64 * 128 * 4 + 2 * 64 * 4  # attention, ffn, norms (f32)
    kv = 2 * 64 * 2 * 256 * 2  # K and V, 64 wide, f16, 256 x 2 cells
    assert info.layer_bytes == (weights,) * N_LAYERS
    assert costs.blocks == (weights + kv,) * N_LAYERS
    assert costs.output == info.output_bytes > 0
    assert costs.vram(1) == costs.fixed + weights + kv
    assert costs.vram(TOTAL) == costs.fixed + N_LAYERS * (weights + kv) + costs.output
    assert costs.fixed > GPU_CONTEXT_BYTES  # the context plus a compute buffer


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 4, 5])
def test_as_many_layers_as_fit_in_the_reported_free_memory(models: Any, layers: int) -> None:
    info, spec = info_of(models["b"]), spec_of(models["b"].model_path)
    free = vram(models["b"], layers) if layers else GPU_CONTEXT_BYTES  # the context alone
    placement = place(info, spec, None, {0: free})
    assert placement.gpu_layers == layers
    assert placement.vram_bytes == vram(models["b"], layers) <= free
    assert placement.full == (layers == TOTAL)
    # What leaves host memory is what the GPU holds, less the GPU-only context and buffers.
    moved = placement.vram_bytes - layer_costs(info, spec).fixed if layers else 0
    assert placement.host_bytes == estimate_runner_bytes(info, spec) - moved
    # One byte less and the last of those layers no longer fits.
    if layers:
        assert place(info, spec, None, {0: free - 1}).gpu_layers == layers - 1


def test_num_gpu_zero_is_cpu_and_n_is_at_most_n(models: Any) -> None:
    info, spec = info_of(models["a"]), spec_of(models["a"].model_path)
    plenty = {0: 80 << 30}
    assert place(info, spec, 0, plenty).gpu_layers == 0
    assert place(info, spec, 0, plenty).vram_bytes == 0
    assert place(info, spec, 2, plenty).gpu_layers == 2
    assert place(info, spec, 99, plenty).gpu_layers == TOTAL
    assert place(info, spec, None, plenty).gpu_layers == TOTAL
    # More than fits: as many as fit.
    assert place(info, spec, 4, {0: vram(models["a"], 2)}).gpu_layers == 2
    assert place(info, spec, None, {}).gpu_layers == 0  # no GPU


def test_the_gpu_with_the_most_room_is_chosen(models: Any) -> None:
    info, spec = info_of(models["a"]), spec_of(models["a"].model_path)
    placement = place(info, spec, None, {0: vram(models["a"], 2), 1: vram(models["a"], 3)})
    assert (placement.device, placement.gpu_layers) == (1, 3)


def test_num_gpu_comes_from_the_request_then_the_modelfile() -> None:
    assert requested_num_gpu({}, {}) is None
    assert requested_num_gpu({"num_gpu": -1}, {"num_gpu": 3}) is None  # -1: as many as fit
    assert requested_num_gpu({}, {"num_gpu": 3}) == 3
    assert requested_num_gpu({"num_gpu": 0}, {"num_gpu": 3}) == 0
    assert requested_num_gpu({"num_gpu": 7}, {}) == 7


# ------------------------------------------------------------------------- the scheduler


@pytest.fixture
async def start(
    models: dict[str, Model],
) -> AsyncIterator[Callable[..., tuple[Scheduler, ScriptedLauncher]]]:
    made: list[Scheduler] = []

    def make(gpu: GpuInfo = NO_GPU, **settings: Any) -> tuple[Scheduler, ScriptedLauncher]:
        launcher = ScriptedLauncher()
        options: dict[str, Any] = {
            "default_keep_alive": 300.0,
            "max_loaded_models": 3,
            "num_parallel": 1,
            "max_queue": 8,
            "context_length": 256,
            "load_timeout": 5.0,
            "memory": MemoryBudget(1 << 40),
            "num_threads": 4,
            "gpu": FixedGpu(gpu),
            **settings,
        }
        scheduler = Scheduler(launcher=launcher, **options)
        made.append(scheduler)
        return scheduler, launcher

    yield make
    for scheduler in made:
        await scheduler.close()


async def until(predicate: Callable[[], object]) -> None:
    async with asyncio.timeout(5.0):
        while not predicate():
            await asyncio.sleep(0.001)


def snapshot(scheduler: Scheduler, model: Model) -> RunnerSnapshot:
    return next(s for s in scheduler.ps() if s.model.model_path == model.model_path)


async def use(scheduler: Scheduler, model: Model, options: dict | None = None) -> None:
    (await scheduler.acquire(model, options or {}, None)).release()


async def test_a_model_goes_to_the_gpu_entirely_when_it_fits(start: Any, models: Any) -> None:
    scheduler, launcher = start(one_gpu(80 << 30))
    await use(scheduler, models["a"])
    (runner,) = launcher.live()
    assert (runner.spec.gpu_layers, runner.spec.main_gpu) == (TOTAL, 0)
    entry = snapshot(scheduler, models["a"])
    assert entry.gpu_layers == TOTAL and entry.size_vram == vram(models["a"], TOTAL)
    assert entry.size > entry.size_vram  # the token embeddings stay in host memory
    assert entry.threads == 1  # nothing left for the CPU to compute


async def test_two_models_share_one_gpu_without_exceeding_it(start: Any, models: Any) -> None:
    free = vram(models["a"], TOTAL) + vram(models["b"], 2) + 1000
    scheduler, launcher = start(one_gpu(free))
    held = await scheduler.acquire(models["a"], {}, None)  # busy: never evicted for GPU room
    await use(scheduler, models["b"])
    a, b = snapshot(scheduler, models["a"]), snapshot(scheduler, models["b"])
    assert (a.gpu_layers, b.gpu_layers) == (TOTAL, 2)  # b gets the layers that still fit
    assert a.size_vram + b.size_vram <= free
    assert [r.spec.gpu_layers for r in launcher.live()] == [TOTAL, 2]
    held.release()


async def test_an_idle_model_is_evicted_from_the_gpu_for_a_full_offload(
    start: Any, models: Any
) -> None:
    free = max(vram(models["a"], TOTAL), vram(models["b"], TOTAL)) + 1000
    scheduler, launcher = start(one_gpu(free))  # host memory and model count leave room
    await use(scheduler, models["a"])
    await use(scheduler, models["b"])
    assert [s.name for s in scheduler.ps()] == ["b:latest"]
    assert snapshot(scheduler, models["b"]).gpu_layers == TOTAL
    (a_runner,) = [r for r in launcher.launched if r.spec.model_path == models["a"].model_path]
    assert a_runner.terminated


async def test_explicit_cpu_runs_without_the_gpu_and_serves_later_requests(
    start: Any, models: Any
) -> None:
    scheduler, launcher = start(one_gpu(80 << 30))
    await use(scheduler, models["a"], {"num_gpu": 0})
    entry = snapshot(scheduler, models["a"])
    assert (entry.gpu_layers, entry.size_vram, entry.threads) == (0, 0, 4)
    await use(scheduler, models["a"])  # "as many as fit" takes the loaded CPU runner
    assert len(launcher.launched) == 1
    await use(scheduler, models["a"], {"num_gpu": 2})  # an explicit other count reloads
    await until(lambda: snapshot(scheduler, models["a"]).gpu_layers == 2)
    assert len(launcher.launched) == 2


async def test_the_runners_measured_gpu_buffers_replace_the_estimate(
    start: Any, models: Any
) -> None:
    scheduler, launcher = start(one_gpu(80 << 30))
    launcher.default = Script(vram_bytes=123 << 20)
    await use(scheduler, models["a"])
    entry = snapshot(scheduler, models["a"])
    assert entry.size_vram == (123 << 20) + GPU_CONTEXT_BYTES
    spec = scheduler.spec_for(models["a"], {})
    host = place(info_of(models["a"]), spec, None, {0: 80 << 30}).host_bytes
    assert entry.size == host + entry.size_vram
    # A runner whose llama.cpp offloaded nothing after all holds no GPU memory.
    launcher.default = Script(vram_bytes=0)
    await use(scheduler, models["b"])
    assert snapshot(scheduler, models["b"]).size_vram == 0


async def test_the_host_budget_counts_only_the_host_part(start: Any, models: Any) -> None:
    info = info_of(models["c"])
    spec = spec_of(models["c"].model_path)
    on_gpu = place(info, spec, None, {0: 80 << 30})
    budget = MemoryBudget((on_gpu.host_bytes + estimate_runner_bytes(info, spec)) // 2)
    cpu_only, _ = start(memory=budget)
    with pytest.raises(ModelTooLarge):
        await cpu_only.acquire(models["c"], {}, None)
    with_gpu, _ = start(one_gpu(80 << 30), memory=budget)
    await use(with_gpu, models["c"])
    assert snapshot(with_gpu, models["c"]).gpu_layers == TOTAL


async def test_gpu_runners_take_no_share_of_the_cpu_threads(start: Any, models: Any) -> None:
    free = vram(models["a"], TOTAL) + 1000  # a fits; b then runs on the CPU
    scheduler, _ = start(one_gpu(free), num_threads=4)
    a = await scheduler.acquire(models["a"], {}, None)
    b = await scheduler.acquire(models["b"], {}, None)
    assert snapshot(scheduler, models["b"]).gpu_layers == 0
    await asyncio.sleep(0.01)
    assert snapshot(scheduler, models["b"]).threads == 4  # not split with the GPU runner
    assert snapshot(scheduler, models["a"]).threads == 1
    a.release()
    b.release()


async def test_num_gpu_on_a_cpu_build_is_accepted_ignored_and_logged(
    start: Any, models: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, launcher = start()  # NO_GPU
    with caplog.at_level(logging.INFO, logger="hana.gpu"):
        await use(scheduler, models["a"], {"num_gpu": 3})
        await use(scheduler, models["a"], {"num_gpu": 3})
    (runner,) = launcher.live()
    assert runner.spec.gpu_layers == 0 and runner.spec.num_gpu is None
    assert snapshot(scheduler, models["a"]).size_vram == 0
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert ignored == ["num_gpu 3 for a:latest ignored: GPU offload is off"]  # once
