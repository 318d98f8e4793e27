"""The scheduler: which runners exist, who may use them, and when they go away.

Runners are started through the `RunnerLauncher` it receives (processes in a server, a scripted
fake in tests) and shown as `RunnerSnapshot`s; it never formats anything for a client.

All scheduling state lives in this object and is changed only on the event loop by plain
(non-async) methods, so no step is interleaved with another; `_pump()` is the one place that
turns waiting requests into loads, evictions and leases. Improvements over Ollama's sched.go:
- no head-of-line blocking: every model has its own queue, loads run side by side, and a request
  for a loaded model never waits behind another model's load or eviction;
- a runner chosen for eviction stops admitting requests (draining), so eviction always ends;
- a load belongs to the scheduler, not to the first requester: it is not aborted when that
  client leaves while others wait;
- eviction is least-recently-used among idle runners, pinned models (keep_alive < 0) last.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hana_protocol.durations import FOREVER
from hana_protocol.errors import (
    HanaError,
    ModelTooLarge,
    RunnerFailed,
    ServerBusy,
)
from hana_server.events import EventBus
from hana_server.foreign_load import ForeignLoad, LoadWatch
from hana_server.gpu.budget import GpuBudget
from hana_server.gpu.detect import GpuProvider
from hana_server.gpu.placement import GPU_CONTEXT_BYTES, Placement, place
from hana_server.launchers.cpu import granted_cpus
from hana_server.launchers.protocol import (
    LaunchedRunner,
    RunnerLauncher,
    RunnerSpec,
)
from hana_server.leases import (
    Lease,
    LoadedRunner,
    Waiter,
    checked_keep_alive,
    expiry_time,
)
from hana_server.memory import MemoryBudget
from hana_server.snapshots import RunnerSnapshot, WaitingSnapshot
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.store import Model

log = logging.getLogger("hana.scheduler")

RUNNER_LOST = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an "
    "internal error, check hana server logs for details"
)

__all__ = ["RUNNER_LOST", "Lease", "LoadedRunner", "RunnerSpec", "Scheduler"]


class Scheduler:
    """Leases runners to requests; loads, keeps warm, evicts and unloads them."""

    def __init__(
        self,
        *,
        launcher: RunnerLauncher,
        default_keep_alive: float,
        max_loaded_models: int,
        num_parallel: int,
        max_queue: int,
        context_length: int,
        load_timeout: float,
        memory: MemoryBudget,
        num_threads: int = 0,
        num_parallel_per_model: dict[str, int] | None = None,
        thread_budget: bool = True,
        gpu: GpuProvider | None = None,
        gpu_overhead: int = 0,
        foreign_load: ForeignLoad | None = None,
    ) -> None:
        self.launcher = launcher
        self.default_keep_alive = default_keep_alive
        self.max_loaded_models = max(1, max_loaded_models)
        self.num_parallel = max(1, num_parallel)
        self.num_parallel_per_model = num_parallel_per_model or {}
        self.max_queue = max_queue
        self.context_length = context_length
        self.load_timeout = load_timeout
        self.memory = memory
        self.cpus = num_threads or granted_cpus()
        self.thread_budget = thread_budget
        # Cores other programs keep busy are left to them (foreign_load.py); None: count all.
        self.load_watch = (
            LoadWatch(
                foreign_load,
                busy=lambda: bool(self._serving_on_cpu()),
                pids=self._runner_pids,
                on_change=self._rebalance_threads,
            )
            if foreign_load is not None
            else None
        )
        self.gpu = GpuBudget(gpu, gpu_overhead)
        self.events = EventBus()
        self._runners: list[LoadedRunner] = []
        self._waiters: deque[Waiter] = deque()
        self._ids = itertools.count(1)
        self._infos: dict[Path, GGUFInfo] = {}
        self._closed = False
        # Entries of models served elsewhere (`RemoteProxy.snapshots`, set by HanaService).
        self.remote_snapshots: Callable[[], list[RunnerSnapshot]] = list

    # ----------------------------------------------------------------- requests

    def spec_for(self, model: Model, options: dict[str, Any]) -> RunnerSpec:
        """The runner a request needs: context from options > model params > server default."""
        info = self.info(model)
        num_ctx = int(options.get("num_ctx") or model.parameters.get("num_ctx") or 0)
        if num_ctx <= 0:  # unset or nonsense: the server default
            num_ctx = self.context_length
        if info.context_length:
            num_ctx = min(num_ctx, info.context_length)
        embedding = "embedding" in model.capabilities
        parallel = self.num_parallel_per_model.get(model.name.display, self.num_parallel)
        return RunnerSpec(
            model_path=model.model_path,
            ctx_size=max(num_ctx, 4),
            parallel=1 if embedding else max(1, parallel),
            embedding=embedding,
            swa_full=bool(info.sliding_window),
            num_gpu=self.gpu.num_gpu(model.name.display, options, model.parameters),
        )

    def info(self, model: Model) -> GGUFInfo:
        if model.model_path not in self._infos:
            self._infos[model.model_path] = GGUFInfo.read(model.model_path)
        return self._infos[model.model_path]

    async def acquire(
        self, model: Model, options: dict[str, Any], keep_alive: float | None
    ) -> Lease:
        """A lease on a ready runner for `model`; cancel the awaiting task to give up waiting.

        Everything that can refuse the request (keep_alive, the spec, the memory check) runs
        before a slot is counted or a waiter queued."""
        if self._closed:
            raise RunnerFailed("server is shutting down")
        keep_alive = checked_keep_alive(keep_alive)
        if self.gpu.info is None:
            await self.gpu.ensure()
        spec = self.spec_for(model, options)
        runner = self._ready_runner(spec)
        if runner is not None:
            return self._admit(runner, keep_alive)
        if len(self._waiters) >= self.max_queue:
            raise ServerBusy()
        # With a GPU, the host part of the best placement (an otherwise empty GPU) must fit.
        size = self._place(model, spec, self.gpu.free(())).host_bytes
        if size > self.memory.total():
            raise ModelTooLarge(
                f"model '{model.name.display}' needs about {size / 2**30:.1f} GiB with "
                f"num_ctx {spec.ctx_size} x {spec.parallel} parallel, more than the memory "
                f"budget of {self.memory.total() / 2**30:.1f} GiB"
            )
        waiter = Waiter(model, spec, keep_alive, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._changed()
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if waiter.future.done() and not waiter.future.cancelled() and not waiter.future.exception():
            waiter.future.result().release()  # a lease was handed over as the client left
        self._changed()
        self._pump()

    def _ready_runner(self, spec: RunnerSpec) -> LoadedRunner | None:
        for runner in self._runners:
            if (
                runner.phase == "ready"
                and runner.spec.covers(spec)
                and runner.active_requests < runner.spec.parallel
                and not any(w.spec.model_path == spec.model_path for w in self._waiters)
            ):
                return runner
        return None

    def _admit(self, runner: LoadedRunner, keep_alive: float | None) -> Lease:
        runner.active_requests += 1
        runner.last_used = time.monotonic()
        if keep_alive is not None:
            runner.keep_alive = keep_alive  # the last request that says wins, as in Ollama
        self._cancel_expiry(runner)
        self._rebalance_threads()
        self._changed()
        return Lease(runner, self._release)

    def _release(self, runner: LoadedRunner) -> None:
        runner.active_requests = max(0, runner.active_requests - 1)
        runner.last_used = time.monotonic()
        if runner in self._runners and runner.active_requests == 0 and runner.phase == "ready":
            self._arm_expiry(runner)
        self._rebalance_threads()
        self._changed()
        self._pump()

    # ---------------------------------------------------------------- the pump

    def _pump(self) -> None:
        """Hand free slots to waiters, start loads that fit, evict what must make room."""
        if self._closed:
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            runner = self._runner_for(waiter.spec)
            if runner is None:
                self._try_load(waiter)
            elif runner.phase == "ready" and runner.active_requests < runner.spec.parallel:
                self._waiters.remove(waiter)
                lease = self._admit(runner, waiter.keep_alive)
                lease.load_duration = time.monotonic() - waiter.since
                waiter.future.set_result(lease)
        for runner in list(self._runners):
            if runner.phase == "draining" and runner.active_requests == 0:
                self._unload(runner)

    def _runner_for(self, spec: RunnerSpec) -> LoadedRunner | None:
        """The runner that will serve `spec`: a compatible live one (loading counts)."""
        for runner in self._runners:
            if runner.phase in ("loading", "ready") and runner.spec.covers(spec):
                return runner
        return None

    def _try_load(self, waiter: Waiter) -> None:
        spec = waiter.spec
        # An incompatible runner of the same model (smaller context) drains, then reloads.
        for runner in self._runners:
            if runner.spec.model_path == spec.model_path and runner.phase in ("ready", "loading"):
                if runner.phase == "ready":
                    runner.phase = "draining"
                    self._cancel_expiry(runner)
                    self._changed()
                return
        if any(r.spec.model_path == spec.model_path for r in self._runners):
            return  # the old one is still going away
        placement = self._place(waiter.model, spec, self._gpu_free(keep_idle=True))
        if self.gpu.available and self._make_gpu_room(waiter, placement):
            return
        if self._fits(placement.host_bytes):
            self._start_load(waiter, placement)
            return
        victim = self._pick_victim()
        if victim is not None:
            log.info(
                "evicting %s to make room for %s", victim.model.name.display, waiter.model.name
            )
            self.events.publish({"event": "evicting", "model": victim.model.name.display})
            if victim.active_requests == 0:
                self._unload(victim)
            else:
                victim.phase = "draining"
                self._cancel_expiry(victim)
                self._changed()

    def _fits(self, size: int) -> bool:
        live = [r for r in self._runners if r.phase != "unloading"]
        going = [r for r in self._runners if r.phase == "unloading"]
        if len(live) + len(going) >= self.max_loaded_models:
            return False
        used = sum(r.size - r.size_vram for r in self._runners)  # host memory only
        return used + size <= self.memory.total()

    # -------------------------------------------------------------------- GPU

    def _place(self, model: Model, spec: RunnerSpec, free: dict[int, int]) -> Placement:
        return place(self.info(model), spec, spec.num_gpu, free)

    def _gpu_free(self, *, keep_idle: bool) -> dict[int, int]:
        """Each GPU's bytes for a new runner; without `keep_idle`, as if the idle runners that
        nobody waits for were gone (what eviction could free)."""
        held = [
            (r.placement.device, r.size_vram)
            for r in self._runners
            if r.size_vram and (keep_idle or not (r.idle and not self._has_waiters(r)))
        ]
        return self.gpu.free(held)

    def _make_gpu_room(self, waiter: Waiter, placement: Placement) -> bool:
        """Evict an idle runner from the GPU when that lets more of the waiter's layers go there
        (Ollama's preference for a full offload); True if the load must wait for it. Busy runners
        are never drained for GPU room: the model then loads with the layers that fit now."""
        best = self._place(waiter.model, waiter.spec, self._gpu_free(keep_idle=False))
        if best.gpu_layers <= placement.gpu_layers:
            return False
        if any(r.size_vram and r.phase == "unloading" for r in self._runners):
            return True  # GPU memory is being freed; the pump comes back when it is
        idle = [r for r in self._runners if r.size_vram and r.idle and not self._has_waiters(r)]
        if not idle:
            return False
        victim = min(idle, key=lambda r: (r.pinned, r.last_used))
        log.info(
            "evicting %s from the GPU to make room for %s",
            victim.model.name.display,
            waiter.model.name,
        )
        self.events.publish({"event": "evicting", "model": victim.model.name.display})
        self._unload(victim)
        return True

    def _pick_victim(self) -> LoadedRunner | None:
        if any(r.phase in ("draining", "unloading") for r in self._runners):
            return None  # room is already being made; wait for it
        idle = [r for r in self._runners if r.idle and not self._has_waiters(r)]
        if idle:
            return min(idle, key=lambda r: (r.pinned, r.last_used))
        # Every ready runner is in use or wanted: the least recently used one drains.
        ready = [r for r in self._runners if r.phase == "ready"]
        return min(ready, key=lambda r: (r.pinned, r.last_used)) if ready else None

    def _has_waiters(self, runner: LoadedRunner) -> bool:
        return any(runner.spec.covers(w.spec) for w in self._waiters)

    # ------------------------------------------------------------- load/unload

    def _start_load(self, waiter: Waiter, placement: Placement) -> None:
        keep_alive = waiter.keep_alive if waiter.keep_alive is not None else self.default_keep_alive
        spec = replace(waiter.spec, gpu_layers=placement.gpu_layers, main_gpu=placement.device)
        runner = LoadedRunner(next(self._ids), waiter.model, spec, placement.size, keep_alive)
        runner.placement = placement
        runner.size_vram = placement.vram_bytes
        size = placement.size
        # A runner with every layer on the GPU needs one thread, and takes none from the others.
        sharing = len(self._using_cores()) + 1
        runner.threads = self._threads_for(sharing) if runner.on_cpu else 1
        self._runners.append(runner)
        runner.load_task = asyncio.get_running_loop().create_task(self._load(runner))
        log.info(
            "loading %s (num_ctx %d x %d parallel, %d threads, ~%d MiB, %d/%d layers on GPU %d)",
            waiter.model.name.display,
            waiter.spec.ctx_size,
            waiter.spec.parallel,
            runner.threads,
            size // 2**20,
            placement.gpu_layers,
            placement.total_layers,
            placement.device,
        )
        self._changed()

    async def _load(self, runner: LoadedRunner) -> None:
        started = time.monotonic()
        try:
            launched = await self.launcher.launch(runner.spec, threads=runner.threads)
            runner.launched = launched

            def on_progress(progress: float) -> None:
                runner.progress = progress
                self._changed()

            health = await launched.wait_ready(self.load_timeout, on_progress)
        except (HanaError, OSError) as error:
            self._load_failed(runner, error)
            return
        except asyncio.CancelledError:
            self._load_failed(runner, RunnerFailed("server is shutting down"))
            raise
        if runner not in self._runners:
            await launched.terminate()
            return
        self._measured_vram(runner, health)
        runner.phase = "ready"
        runner.progress = 1.0
        runner.last_used = time.monotonic()
        load_seconds = time.monotonic() - started
        log.info(
            "loaded %s in %.2fs (pid %s)", runner.model.name.display, load_seconds, launched.pid
        )
        self.events.publish(
            {"event": "loaded", "model": runner.model.name.display, "seconds": load_seconds}
        )
        asyncio.get_running_loop().create_task(self._watch(runner, launched))
        self._pump()  # hand the new runner to its waiters before its keep-alive can start
        if runner.idle:
            self._arm_expiry(runner)
        self._changed()

    def _load_failed(self, runner: LoadedRunner, error: Exception) -> None:
        message = error.message if isinstance(error, HanaError) else str(error)
        log.error("loading %s failed: %s", runner.model.name.display, message)
        if runner.launched is not None:
            asyncio.get_running_loop().create_task(runner.launched.terminate())
        if runner in self._runners:
            self._runners.remove(runner)
        failure = error if isinstance(error, HanaError) else RunnerFailed(message)
        for waiter in list(self._waiters):
            if runner.spec.covers(waiter.spec) and not waiter.future.done():
                self._waiters.remove(waiter)
                waiter.future.set_exception(failure)
        self.events.publish(
            {"event": "load_failed", "model": runner.model.name.display, "error": message}
        )
        self._changed()
        self._pump()

    def _measured_vram(self, runner: LoadedRunner, health: dict[str, object]) -> None:
        """Count what the runner says its GPU buffers take (plus its GPU context) instead of the
        estimate, so later placements see the truth; none at all if it offloaded nothing."""
        buffers = health.get("vram_bytes")
        if runner.spec.gpu_layers > 0 and isinstance(buffers, int) and buffers >= 0:
            vram = buffers + GPU_CONTEXT_BYTES if buffers else 0
            runner.size += vram - runner.size_vram
            runner.size_vram = vram

    async def _watch(self, runner: LoadedRunner, launched: LaunchedRunner) -> None:
        """Notice a runner that dies on its own (crash, OOM kill, kill -9)."""
        code = await launched.exited
        if runner in self._runners and runner.phase != "unloading":
            log.error(
                "runner for %s (pid %s) exited with %s",
                runner.model.name.display,
                launched.pid,
                code,
            )
            self._cancel_expiry(runner)
            self._runners.remove(runner)
            self.events.publish(
                {"event": "crashed", "model": runner.model.name.display, "pid": launched.pid}
            )
            self._changed()
            self._pump()

    def _unload(self, runner: LoadedRunner) -> None:
        if runner.phase == "unloading":
            return
        runner.phase = "unloading"
        self._cancel_expiry(runner)
        self._changed()
        asyncio.get_running_loop().create_task(self._terminate(runner))

    async def _terminate(self, runner: LoadedRunner) -> None:
        if runner.load_task is not None and not runner.load_task.done():
            runner.load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner.load_task
        if runner.launched is not None:
            await runner.launched.terminate()
        if runner in self._runners:
            self._runners.remove(runner)
        log.info("unloaded %s", runner.model.name.display)
        self.events.publish({"event": "unloaded", "model": runner.model.name.display})
        self._rebalance_threads()
        self._changed()
        self._pump()

    # -------------------------------------------------------------- keep-alive

    def _arm_expiry(self, runner: LoadedRunner) -> None:
        self._cancel_expiry(runner)
        runner.expires_at = expiry_time(runner.keep_alive)
        if runner.keep_alive == FOREVER:
            return
        if runner.keep_alive <= 0:
            self._unload(runner)
            return
        runner.expiry = asyncio.get_running_loop().call_later(
            runner.keep_alive, self._expire, runner
        )

    def _cancel_expiry(self, runner: LoadedRunner) -> None:
        if runner.expiry is not None:
            runner.expiry.cancel()
            runner.expiry = None
        if runner.keep_alive == FOREVER or runner.phase in ("loading", "ready"):
            runner.expires_at = expiry_time(runner.keep_alive)

    def _expire(self, runner: LoadedRunner) -> None:
        runner.expiry = None
        if runner in self._runners and runner.idle:
            self._unload(runner)

    def set_keep_alive(self, model: Model, keep_alive: float) -> bool:
        """Apply a keep-alive to the loaded runner of `model` (0 = unload when idle)."""
        keep_alive = checked_keep_alive(keep_alive)
        assert keep_alive is not None
        found = False
        for runner in self._runners:
            if runner.spec.model_path == model.model_path and runner.phase != "unloading":
                found = True
                runner.keep_alive = keep_alive
                if keep_alive == 0:
                    if runner.active_requests == 0 and runner.phase == "ready":
                        self._unload(runner)
                    elif runner.phase == "ready":
                        runner.phase = "draining"
                elif runner.idle:
                    self._arm_expiry(runner)
                else:
                    self._cancel_expiry(runner)
        self._changed()
        self._pump()
        return found

    # ----------------------------------------------------------------- threads

    def _using_cores(self) -> list[LoadedRunner]:
        """Runners that compute on the CPU now or soon: loading, or holding leases."""
        return [
            r for r in self._runners if r.on_cpu and (r.active_requests > 0 or r.phase == "loading")
        ]

    def _threads_for(self, sharing: int) -> int:
        if not self.thread_budget:
            return self.cpus  # every runner takes all cores (to measure what the budget saves)
        reserved = self.load_watch.load.reserved if self.load_watch is not None else 0
        return max(1, (self.cpus - reserved) // max(1, sharing))

    def _serving_on_cpu(self) -> list[LoadedRunner]:
        return [
            r
            for r in self._runners
            if r.on_cpu and r.active_requests > 0 and r.phase != "unloading"
        ]

    def _runner_pids(self) -> list[int]:
        return [
            pid
            for r in self._runners
            if r.launched is not None and (pid := r.launched.pid) is not None
        ]

    def _rebalance_threads(self) -> None:
        """Split the granted cores among serving runners: oversubscription costs 2-3x on 2 cores."""
        serving = self._serving_on_cpu()
        if serving and self.load_watch is not None and not self._closed:
            self.load_watch.start()
        share = self._threads_for(len(serving))
        for runner in serving:
            if runner.threads != share and runner.launched is not None:
                runner.threads = share
                asyncio.get_running_loop().create_task(self._set_threads(runner, share))

    async def _set_threads(self, runner: LoadedRunner, threads: int) -> None:
        with contextlib.suppress(Exception):
            if runner.launched is not None:
                await runner.launched.client.set_threads(threads)

    # ------------------------------------------------------------------- state

    def _queued_for(self, runner: LoadedRunner) -> int:
        return sum(1 for w in self._waiters if runner.spec.covers(w.spec))

    def ps(self) -> list[RunnerSnapshot]:
        """Every runner, the one expiring last first (Ollama's order for `/api/ps`)."""
        snapshots = [runner.snapshot(self._queued_for(runner)) for runner in self._runners]
        snapshots += self.remote_snapshots()  # remote models (hana_server.remote): no runner
        snapshots.sort(key=lambda s: s.expires_at, reverse=True)
        return snapshots

    def waiting(self) -> list[WaitingSnapshot]:
        """Requests waiting for a model that has no runner yet (shown as 'queued')."""
        counts: dict[str, int] = {}
        for waiter in self._waiters:
            if self._runner_for(waiter.spec) is None:
                name = waiter.model.name.display
                counts[name] = counts.get(name, 0) + 1
        return [WaitingSnapshot(name, n) for name, n in counts.items()]

    def _changed(self) -> None:
        self.events.publish_state(lambda: {"models": self.ps(), "waiting": self.waiting()})

    def state_changed(self) -> None:
        """Publish a state event (the remote gates call it when their counts change)."""
        self._changed()

    def has_work(self) -> bool:
        """True while any request holds or waits for a runner (Jupyter's idle culler asks)."""
        return (
            bool(self._waiters)
            or any(r.active_requests for r in self._runners)
            or any(s.active_requests or s.queued for s in self.remote_snapshots())
        )

    # ---------------------------------------------------------------- shutdown

    async def close(self) -> None:
        """Fail every waiter and terminate every runner process; never raises (it runs at
        shutdown, where an exception would leave runner processes behind)."""
        self._closed = True
        for waiter in list(self._waiters):
            if not waiter.future.done():
                waiter.future.set_exception(RunnerFailed("server is shutting down"))
        self._waiters.clear()
        runners = list(self._runners)
        for runner in runners:
            runner.phase = "unloading"
            try:
                self._cancel_expiry(runner)
            except Exception:
                log.exception("while stopping the expiry of %s", runner.model.name.display)
        results = await asyncio.gather(
            *(self._terminate(r) for r in runners), return_exceptions=True
        )
        for runner, result in zip(runners, results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping %s failed: %r", runner.model.name.display, result)
        self._runners.clear()
        if self.load_watch is not None:
            await self.load_watch.close()
        self.events.close()

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        return self.events.subscribe()
