"""hana's own state endpoints (live runner state as server-sent events, a status snapshot) and
the JSON every state view shares: `/api/ps` entries are built here from the scheduler's snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any

from tornado.iostream import StreamClosedError

from hana_server import __version__
from hana_server.api.base import HanaHandlerMixin
from hana_server.snapshots import RunnerSnapshot, WaitingSnapshot


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def runner_json(runner: RunnerSnapshot) -> dict[str, Any]:
    """An `/api/ps` entry: Ollama's fields plus hana's state, counts, pid and port."""
    model = runner.model
    return {
        "name": runner.name,
        "model": runner.name,
        "size": runner.size,
        "digest": model.digest,
        "details": model.details(),
        "expires_at": rfc3339(runner.expires_at),
        "size_vram": runner.size_vram,
        "context_length": runner.context_length,
        "state": runner.state,
        "in_flight": runner.active_requests,
        "queued": runner.queued,
        "num_parallel": runner.num_parallel,
        "pid": runner.pid,
        "port": runner.port,
        "threads": runner.threads,
        "gpu_layers": runner.gpu_layers,
        "load_progress": round(runner.load_progress, 3),
        "keep_alive": -1 if runner.pinned else runner.keep_alive,
        "tokens_per_second": runner.tokens_per_second,
        # A remote model (hana_server.remote): where it runs, as /api/tags shows it.
        **{k: model.config[k] for k in ("remote_model", "remote_host") if k in model.config},
    }


def waiting_json(waiting: WaitingSnapshot) -> dict[str, Any]:
    return {"name": waiting.name, "queued": waiting.queued}


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    """A scheduler event as JSON: a `state` event carries snapshots, the others plain values."""
    if event.get("event") != "state":
        return event
    return {
        **event,
        "models": [runner_json(r) for r in event.get("models", [])],
        "waiting": [waiting_json(w) for w in event.get("waiting", [])],
    }


class EventsHandler(HanaHandlerMixin):
    """`GET /api/hana/events`: the scheduler's state changes as `text/event-stream`."""

    async def get(self) -> None:
        """Stream state events until the client leaves or the server stops."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        events = self.service.scheduler.subscribe()
        heartbeat = self.service.settings.events_heartbeat
        # The next event is awaited as a task that outlives a heartbeat: cancelling `anext` at
        # each timeout would close the subscription (the stream used to end at its first one).
        pending: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({pending}, timeout=heartbeat)
                if not done:
                    self.write(": keep-alive\n\n")  # lets clients and proxies see we are alive
                    await self.flush()
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    break
                finally:
                    pending = None
                data = json.dumps(event_json(event))
                self.write(f"event: {event.get('event', 'message')}\ndata: {data}\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await events.aclose()
        if not self._finished:
            self.finish()


class StatusHandler(HanaHandlerMixin):
    """`GET /api/hana/status`: one snapshot of everything the panel shows."""

    async def get(self) -> None:
        """Runners, waiting requests, and the server's settings."""
        service = self.service
        settings = service.settings
        status: dict[str, Any] = {
            "version": __version__,
            "url": service.url,
            "models": [runner_json(r) for r in service.scheduler.ps()],
            "waiting": [waiting_json(w) for w in service.scheduler.waiting()],
            "pulls": service.pulls.snapshot(),
            "routing": service.router.stats(),
            "cpus": service.scheduler.cpus,
            "memory_budget": service.scheduler.memory.total(),
            "gpu": service.scheduler.gpu.status(),
            "settings": {
                "keep_alive": settings.keep_alive,
                "max_loaded_models": settings.max_loaded_models,
                "num_parallel": settings.num_parallel,
                "max_queue": settings.max_queue,
                "context_length": settings.context_length,
                "default_model": settings.default_model,
            },
        }
        self.send_json(status)
