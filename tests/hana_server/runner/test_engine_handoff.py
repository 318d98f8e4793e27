"""The engine thread's hand-off to the event loop (in-process, no model): a fast stream wakes the
loop once per interval, the first text and the end of work never wait, and `prepare` (the
warm-up decode) runs on the engine thread itself."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hana_server.runner.engine_thread import EngineThread


class Ticker(EngineThread):
    """Posts one message per step, like a generating sequence; the first one urgent."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, step_seconds: float, interval: float
    ) -> None:
        super().__init__(None, loop, 1, "test-engine", lambda _message: None, interval)
        self.step_seconds = step_seconds
        self.remaining = 0
        self.count = 0
        self.sink_calls: list[tuple[int, dict[str, Any]]] = []  # (delivery number, message)
        self.deliveries = 0

    def _deliver(self) -> None:
        self.deliveries += 1
        super()._deliver()

    def _sink(self, message: dict[str, Any]) -> None:
        self.sink_calls.append((self.deliveries, message))

    def _accept(self, command: int) -> None:
        self.remaining, self.count = command, 0

    def _work(self) -> bool:
        if self.remaining <= 0:
            return False
        time.sleep(self.step_seconds)
        self.remaining -= 1
        self.count += 1
        self._post(self._sink, {"n": self.count}, urgent=self.count == 1)
        return self.remaining > 0

    def _fail_all(self, message: str) -> None:
        pass


async def run_ticks(engine: Ticker, steps: int) -> None:
    """Start the engine, let it make `steps` messages, wait until all have reached the sink."""
    engine.start()
    try:
        engine._submit(steps)
        while len(engine.sink_calls) < steps:
            await asyncio.sleep(0.005)
    finally:
        assert engine.stop(5)


async def test_a_fast_stream_wakes_the_loop_once_per_interval() -> None:
    engine = Ticker(asyncio.get_running_loop(), step_seconds=0.004, interval=0.05)
    await run_ticks(engine, 50)  # ~200 ms of steps
    assert [message["n"] for _, message in engine.sink_calls] == list(range(1, 51))
    # Once per step would be 50; the first message alone, ~4 intervals, the rest when idle.
    assert engine.deliveries <= 8, engine.deliveries
    first_batch = [m for delivery, m in engine.sink_calls if delivery == 1]
    assert first_batch == [{"n": 1}]  # the first text is never held back


async def test_without_an_interval_every_step_is_handed_over() -> None:
    engine = Ticker(asyncio.get_running_loop(), step_seconds=0.004, interval=0.0)
    await run_ticks(engine, 20)
    # A loop that was slow to run a hand-off gets the next steps merged into it, never split.
    assert engine.deliveries >= 10, engine.deliveries


async def test_the_last_messages_go_out_when_work_ends_not_after_the_interval() -> None:
    engine = Ticker(asyncio.get_running_loop(), step_seconds=0.001, interval=10.0)
    started = time.perf_counter()
    await run_ticks(engine, 5)
    assert time.perf_counter() - started < 5  # the 10 s interval was not waited out
    assert engine.deliveries == 2  # the urgent first message, then the rest as work ended


def test_prepare_runs_on_the_engine_thread_and_its_failure_is_raised_by_start() -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[str] = []
        engine = Ticker(loop, step_seconds=0, interval=0)
        engine.start(prepare=lambda: seen.append(threading.current_thread().name))
        assert seen == ["test-engine"]
        assert engine.stop(5)

        def broken() -> None:
            raise RuntimeError("warm-up decode failed with status 1")

        failing = Ticker(loop, step_seconds=0, interval=0)
        with pytest.raises(RuntimeError, match="warm-up decode failed"):
            failing.start(prepare=broken)
        assert not failing._thread.is_alive()
    finally:
        loop.close()
