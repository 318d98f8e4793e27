"""Fixtures for runner tests: real runner processes, terminated after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hana_server.launchers import RunnerProcess
from runner_harness import StartRunner


@pytest.fixture
async def start_runner() -> AsyncIterator[StartRunner]:
    """`await start_runner(model_path, **options)` -> a ready RunnerProcess (1 thread by default:
    the test machine has 2 cores and other tests run next to these)."""
    started: list[RunnerProcess] = []

    async def start(model_path: Path, **options: Any) -> RunnerProcess:
        options = {"ctx_size": 512, "parallel": 1, "threads": 1, **options}
        process = await RunnerProcess.start(model_path, **options)
        started.append(process)
        await process.wait_ready(120)
        return process

    yield start
    for process in started:
        await process.terminate()
