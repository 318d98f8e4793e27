"""Scheduling policy on scripted runners: eviction, keep-alive, queue bound, drain, crash,
cancellation, thread budget and head-of-line, each in milliseconds (no process is started)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hana_server.foreign_load import ForeignLoad
from hana_server.memory import MemoryBudget, estimate_runner_bytes
from hana_server.scheduler import Lease, Scheduler
from hana_server.snapshots import RunnerSnapshot
from hana_server.store.store import Model, ModelStore
from scripted_runner import Gate, Script, ScriptedLauncher, ScriptedRunner
from tiny_gguf import write_tiny_gguf

from hana_protocol.durations import FOREVER
from hana_protocol.errors import ModelTooLarge, RunnerFailed, ServerBusy

SETTLE_TIMEOUT = 5.0  # a safety net for waits below; nothing here should take more than ms


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """Models a, b and c, each its own tiny GGUF file (so each gets its own runner)."""
    root = tmp_path_factory.mktemp("policy")
    store = ModelStore(root / "models")
    found = {}
    for seed, name in enumerate(("a", "b", "c")):
        path = write_tiny_gguf(root / f"{name}.gguf", seed=seed)
        found[name] = store.create(name, model_digest=store.import_file(path))
    return found


@pytest.fixture
async def start(
    models: dict[str, Model],
) -> AsyncIterator[Callable[..., tuple[Scheduler, ScriptedLauncher]]]:
    """Make a scheduler on a scripted launcher (settings as keywords); closed after the test."""
    made: list[Scheduler] = []

    def make(**settings: Any) -> tuple[Scheduler, ScriptedLauncher]:
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
            **settings,
        }
        scheduler = Scheduler(launcher=launcher, **options)
        made.append(scheduler)
        return scheduler, launcher

    yield make
    for scheduler in made:
        await scheduler.close()


async def until(predicate: Callable[[], object]) -> None:
    """Let the scheduler's tasks run until `predicate()` holds."""
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.001)


def loaded(scheduler: Scheduler) -> list[str]:
    return sorted(s.name.split(":")[0] for s in scheduler.ps())


def snapshot(scheduler: Scheduler, model: Model) -> RunnerSnapshot:
    return next(s for s in scheduler.ps() if s.model.model_path == model.model_path)


async def use(scheduler: Scheduler, model: Model, keep_alive: float | None = None) -> None:
    """One request to `model`: acquire, then release at once."""
    lease = await scheduler.acquire(model, {}, keep_alive)
    lease.release()


def runner_of(launcher: ScriptedLauncher, model: Model) -> ScriptedRunner:
    (runner,) = launcher.live(model.model_path)
    return runner


# ------------------------------------------------------------------------------ eviction


async def test_least_recently_used_idle_model_is_evicted(start: Any, models: Any) -> None:
    scheduler, launcher = start(max_loaded_models=2)
    await use(scheduler, models["a"])
    await use(scheduler, models["b"])
    await use(scheduler, models["a"])  # b is now the least recently used
    await use(scheduler, models["c"])
    assert loaded(scheduler) == ["a", "c"]
    assert [r.spec.model_path for r in launcher.live()] == [
        models["a"].model_path,
        models["c"].model_path,
    ]
    (b_runner,) = [r for r in launcher.launched if r.spec.model_path == models["b"].model_path]
    assert b_runner.terminated


async def test_pinned_model_is_evicted_last(start: Any, models: Any) -> None:
    scheduler, _ = start(max_loaded_models=2)
    await use(scheduler, models["a"], keep_alive=FOREVER)
    await use(scheduler, models["b"])  # a is least recently used, but pinned
    await use(scheduler, models["c"])
    assert loaded(scheduler) == ["a", "c"]
    assert snapshot(scheduler, models["a"]).expires_at.year == 2318


async def test_memory_budget_evicts_the_least_recently_used(start: Any, models: Any) -> None:
    probe, _ = start()
    a = models["a"]
    size = estimate_runner_bytes(probe.info(a), probe.spec_for(a, {}))
    scheduler, _ = start(max_loaded_models=10, memory=MemoryBudget(2 * size + size // 2))
    await use(scheduler, models["a"])
    await use(scheduler, models["b"])
    await use(scheduler, models["c"])  # two fit: a, the least recently used, makes room
    assert loaded(scheduler) == ["b", "c"]
    assert sum(s.size for s in scheduler.ps()) <= scheduler.memory.total()


async def test_a_model_that_can_never_fit_fails_without_a_launch(start: Any, models: Any) -> None:
    scheduler, launcher = start(memory=MemoryBudget(1 << 20))
    with pytest.raises(ModelTooLarge, match="memory budget"):
        await scheduler.acquire(models["a"], {}, None)
    assert launcher.launched == []
    assert scheduler.ps() == []


async def test_a_victim_in_use_drains_before_it_is_unloaded(start: Any, models: Any) -> None:
    scheduler, launcher = start(max_loaded_models=1)
    held = await scheduler.acquire(models["a"], {}, None)
    waiting = asyncio.create_task(scheduler.acquire(models["b"], {}, None))
    await until(lambda: snapshot(scheduler, models["a"]).phase == "draining")
    assert snapshot(scheduler, models["a"]).state == "expiring"
    a_runner = runner_of(launcher, models["a"])
    assert a_runner.alive and not waiting.done()
    # A draining runner admits nobody new: this request waits for a's reload after b.
    late = asyncio.create_task(scheduler.acquire(models["a"], {}, None))
    await asyncio.sleep(0.01)
    assert not late.done() and snapshot(scheduler, models["a"]).active_requests == 1
    assert len(launcher.launched) == 1  # b's runner is not started while a still serves
    held.release()
    lease_b = await asyncio.wait_for(waiting, SETTLE_TIMEOUT)
    assert a_runner.terminated
    assert loaded(scheduler) == ["b"]
    lease_b.release()
    (await asyncio.wait_for(late, SETTLE_TIMEOUT)).release()
    assert loaded(scheduler) == ["a"]


# ---------------------------------------------------------------------------- keep-alive


async def test_keep_alive_expiry_unloads_and_terminates(start: Any, models: Any) -> None:
    scheduler, launcher = start()
    await use(scheduler, models["a"], keep_alive=0.05)
    runner = runner_of(launcher, models["a"])
    assert snapshot(scheduler, models["a"]).state == "ready"
    await until(lambda: scheduler.ps() == [])
    assert runner.terminated


async def test_keep_alive_zero_unloads_after_the_request(start: Any, models: Any) -> None:
    scheduler, launcher = start()
    lease = await scheduler.acquire(models["a"], {}, 0)
    runner = runner_of(launcher, models["a"])
    await asyncio.sleep(0.01)
    assert snapshot(scheduler, models["a"]).state == "busy" and runner.alive
    lease.release()
    await until(lambda: scheduler.ps() == [])
    assert runner.terminated


async def test_keep_alive_forever_never_arms_a_timer(start: Any, models: Any) -> None:
    scheduler, launcher = start(default_keep_alive=0.01)
    await use(scheduler, models["a"], keep_alive=FOREVER)
    await asyncio.sleep(0.05)  # longer than the default keep-alive
    entry = snapshot(scheduler, models["a"])
    assert entry.pinned and entry.expires_at.year == 2318
    assert runner_of(launcher, models["a"]).alive


async def test_set_keep_alive_applies_to_the_loaded_runner(start: Any, models: Any) -> None:
    scheduler, launcher = start()
    assert not scheduler.set_keep_alive(models["a"], 0)  # nothing loaded: nothing to apply
    await use(scheduler, models["a"])
    assert scheduler.set_keep_alive(models["a"], FOREVER)
    assert snapshot(scheduler, models["a"]).pinned
    assert scheduler.set_keep_alive(models["a"], 0.05)
    await until(lambda: scheduler.ps() == [])
    await use(scheduler, models["b"])
    lease = await scheduler.acquire(models["b"], {}, None)
    scheduler.set_keep_alive(models["b"], 0)  # in use: drains, unloads once released
    assert snapshot(scheduler, models["b"]).state == "expiring"
    assert runner_of(launcher, models["b"]).alive
    lease.release()
    await until(lambda: scheduler.ps() == [])


# ------------------------------------------------------------------------- the queue


async def test_requests_beyond_num_parallel_wait_and_the_queue_is_bounded(
    start: Any, models: Any
) -> None:
    scheduler, _ = start(num_parallel=1, max_queue=1)
    first = await scheduler.acquire(models["a"], {}, None)
    second = asyncio.create_task(scheduler.acquire(models["a"], {}, None))
    await until(lambda: snapshot(scheduler, models["a"]).queued == 1)
    with pytest.raises(ServerBusy):
        await scheduler.acquire(models["a"], {}, None)
    assert not second.done()
    first.release()
    lease = await asyncio.wait_for(second, SETTLE_TIMEOUT)
    assert snapshot(scheduler, models["a"]).active_requests == 1
    assert snapshot(scheduler, models["a"]).queued == 0
    lease.release()


async def test_cancelling_a_waiting_acquire_leaks_nothing(start: Any, models: Any) -> None:
    scheduler, _ = start(num_parallel=1)
    held = await scheduler.acquire(models["a"], {}, None)
    waiting = asyncio.create_task(scheduler.acquire(models["a"], {}, None))
    await until(lambda: snapshot(scheduler, models["a"]).queued == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert snapshot(scheduler, models["a"]).queued == 0
    held.release()
    assert snapshot(scheduler, models["a"]).active_requests == 0
    assert not scheduler.has_work()


async def test_a_lease_handed_over_as_its_client_leaves_is_given_back(
    start: Any, models: Any
) -> None:
    scheduler, _ = start(num_parallel=1)
    held = await scheduler.acquire(models["a"], {}, None)
    waiting = asyncio.create_task(scheduler.acquire(models["a"], {}, None))
    await until(lambda: snapshot(scheduler, models["a"]).queued == 1)
    held.release()  # hands the slot to the waiter at once...
    assert snapshot(scheduler, models["a"]).active_requests == 1
    waiting.cancel()  # ...whose client leaves before it could take it
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert snapshot(scheduler, models["a"]).active_requests == 0
    assert not scheduler.has_work()


async def test_a_load_outlives_the_request_that_started_it(start: Any, models: Any) -> None:
    scheduler, launcher = start()
    gate = Gate()
    launcher.script(models["a"].model_path, Script(load_gate=gate))
    first = asyncio.create_task(scheduler.acquire(models["a"], {}, None))
    await until(lambda: gate.reached.is_set())
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert snapshot(scheduler, models["a"]).state == "loading"
    gate.open()
    await until(lambda: snapshot(scheduler, models["a"]).state == "ready")
    assert snapshot(scheduler, models["a"]).active_requests == 0  # no lease was left behind
    assert not scheduler.has_work()


# ------------------------------------------------------------------------------ crashes


async def test_a_crash_fails_the_stream_drops_the_runner_and_the_next_request_reloads(
    start: Any, models: Any
) -> None:
    scheduler, launcher = start()
    gate = Gate()
    launcher.script(models["a"].model_path, Script(gate=gate))
    events = scheduler.subscribe()
    assert (await anext(events))["event"] == "state"  # subscribed from here on
    lease: Lease = await scheduler.acquire(models["a"], {}, None)
    stream = lease.client.completion({"prompt": "x", "options": {}})
    assert await anext(stream) == {"content": "Hello"}
    runner = runner_of(launcher, models["a"])
    runner.crash()
    with pytest.raises(RunnerFailed):
        await anext(stream)
    lease.release()
    await until(lambda: scheduler.ps() == [])

    async def crash_event() -> dict[str, Any]:
        async for event in events:
            if event["event"] == "crashed":
                return event
        raise AssertionError("the event stream ended without a crash event")

    assert (await asyncio.wait_for(crash_event(), SETTLE_TIMEOUT))["model"] == "a:latest"
    await events.aclose()
    launcher.scripts.clear()
    await use(scheduler, models["a"])
    assert len(launcher.launched) == 2 and launcher.live() == [launcher.launched[1]]


async def test_a_failed_load_fails_its_waiters_and_the_next_request_tries_again(
    start: Any, models: Any
) -> None:
    scheduler, launcher = start()
    launcher.script(models["a"].model_path, Script(load_steps=[0.5], load_error="bad tensor"))
    results = await asyncio.gather(
        scheduler.acquire(models["a"], {}, None),
        scheduler.acquire(models["a"], {}, None),
        return_exceptions=True,
    )
    assert all(isinstance(r, RunnerFailed) and r.message == "bad tensor" for r in results)
    assert len(launcher.launched) == 1  # both waited for one load
    assert scheduler.ps() == []
    launcher.scripts.clear()
    await use(scheduler, models["a"])
    assert loaded(scheduler) == ["a"]


# ------------------------------------------------------------------------------ threads


async def test_threads_are_rebalanced_across_serving_runners(start: Any, models: Any) -> None:
    scheduler, launcher = start(num_threads=4)
    a = await scheduler.acquire(models["a"], {}, None)
    assert snapshot(scheduler, models["a"]).threads == 4
    b = await scheduler.acquire(models["b"], {}, None)
    await until(lambda: runner_of(launcher, models["a"]).threads == 2)
    assert [s.threads for s in scheduler.ps()] == [2, 2]
    assert runner_of(launcher, models["b"]).threads == 2
    b.release()
    await until(lambda: runner_of(launcher, models["a"]).threads == 4)
    assert runner_of(launcher, models["a"]).thread_history == [4, 2, 4]
    a.release()


async def test_without_a_thread_budget_every_runner_takes_all_cores(
    start: Any, models: Any
) -> None:
    scheduler, launcher = start(num_threads=4, thread_budget=False)
    a = await scheduler.acquire(models["a"], {}, None)
    b = await scheduler.acquire(models["b"], {}, None)
    await asyncio.sleep(0.01)
    assert [s.threads for s in scheduler.ps()] == [4, 4]
    assert all(r.thread_history == [4] for r in launcher.live())
    a.release()
    b.release()


class BusyElsewhere(ForeignLoad):
    """Other programs keep `cores` busy from the first sample on (the reading itself is
    tested with real processes in test_foreign_load.py)."""

    def __init__(self, cores: int) -> None:
        super().__init__()
        self.cores = cores
        self.samples = 0

    def update(self, hana_pids: Any, now: float) -> None:
        self.samples += 1
        self.changed = self.reserved != self.cores
        self.reserved = self.cores


async def test_cores_busy_elsewhere_are_left_out_of_the_split(start: Any, models: Any) -> None:
    load = BusyElsewhere(cores=1)
    scheduler, launcher = start(num_threads=4, foreign_load=load)
    a = await scheduler.acquire(models["a"], {}, None)
    await until(lambda: runner_of(launcher, models["a"]).threads == 3)
    b = await scheduler.acquire(models["b"], {}, None)
    await until(lambda: [s.threads for s in scheduler.ps()] == [1, 1])  # 3 cores // 2
    b.release()
    a.release()
    samples = load.samples
    await asyncio.sleep(1.5)  # nobody computes: the watch has stopped sampling
    assert load.samples <= samples + 1


# --------------------------------------------------------------------------- head of line


async def test_a_loading_model_does_not_block_a_loaded_one(start: Any, models: Any) -> None:
    scheduler, launcher = start()
    await use(scheduler, models["a"])
    gate = Gate()
    launcher.script(models["b"].model_path, Script(load_steps=[0.25, 0.5], load_gate=gate))
    loading = asyncio.create_task(scheduler.acquire(models["b"], {}, None))
    await until(lambda: gate.reached.is_set())
    assert snapshot(scheduler, models["b"]).load_progress == 0.5
    await use(scheduler, models["a"])  # served while b still loads
    assert snapshot(scheduler, models["b"]).state == "loading" and not loading.done()
    gate.open()
    (await asyncio.wait_for(loading, SETTLE_TIMEOUT)).release()
    assert loaded(scheduler) == ["a", "b"]


# ------------------------------------------------------------------------------ snapshots


async def test_snapshots_say_busy_only_for_a_ready_runner_with_active_requests(
    start: Any, models: Any
) -> None:
    scheduler, _ = start()
    assert not scheduler.has_work()
    lease = await scheduler.acquire(models["a"], {}, None)
    entry = snapshot(scheduler, models["a"])
    assert (entry.phase, entry.state, entry.active_requests) == ("ready", "busy", 1)
    assert entry.name == "a:latest" and entry.pid is None  # scripted: no process
    assert scheduler.has_work()
    lease.release()
    entry = snapshot(scheduler, models["a"])
    assert (entry.state, entry.active_requests) == ("ready", 0)
    assert not scheduler.has_work()
