"""hana's own endpoints: live runner state as server-sent events, and a status snapshot."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.iostream import StreamClosedError

from hana_server import __version__
from hana_server.api.base import HanaHandlerMixin

HEARTBEAT_SECONDS = 15.0


class EventsHandler(HanaHandlerMixin):
    """`GET /api/hana/events`: the scheduler's state changes as `text/event-stream`."""

    async def get(self) -> None:
        """Stream state events until the client leaves or the server stops."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        events = self.service.scheduler.subscribe()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), HEARTBEAT_SECONDS)
                except TimeoutError:
                    self.write(": keep-alive\n\n")  # lets clients and proxies see we are alive
                    await self.flush()
                    continue
                except StopAsyncIteration:
                    break
                self.write(f"event: {event.get('event', 'message')}\ndata: {json.dumps(event)}\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
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
            "models": service.scheduler.ps(),
            "waiting": service.scheduler.waiting(),
            "cpus": service.scheduler.cpus,
            "memory_budget": service.scheduler.memory.total(),
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
