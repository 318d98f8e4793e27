"""An engine thread that dies fails its requests and tells the runner to exit (in-process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hana_server.runner.engine import CompletionEngine
from hana_server.runner.model import LlamaLog
from hana_server.runner.serving import ServingModel
from hana_server.runner.settings import RunnerSettings


async def test_engine_failure_fails_requests_and_reports_the_crash(
    tiny_gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    crashed: asyncio.Future[str] = loop.create_future()
    settings = RunnerSettings(model=tiny_gguf_path, ctx_size=128, parallel=1, threads=1)
    service = ServingModel.load(
        settings,
        loop,
        llama_log=LlamaLog(),
        on_progress=lambda _progress: None,
        should_abort=lambda: False,
        on_engine_crash=lambda message: loop.call_soon_threadsafe(crashed.set_result, message),
    )

    def broken_sample(self: CompletionEngine, completion: Any, row: int) -> None:
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(CompletionEngine, "_sample", broken_sample)
    messages: list[dict[str, Any]] = []
    answered = asyncio.Event()

    def sink(message: dict[str, Any]) -> None:
        messages.append(message)
        answered.set()

    service.engine.submit(service.new_completion({"prompt": "x"}, sink))
    assert "sampler exploded" in await asyncio.wait_for(crashed, 30)
    await asyncio.wait_for(answered.wait(), 30)
    assert messages == [{"error": "runner engine failed; see the runner log"}]
    assert service.close(5)
