"""What every hana handler shares: the service, JSON bodies, Ollama-shaped errors, streaming.

Handlers are written once as mixins over `tornado.web.RequestHandler`; each host (standalone or
Jupyter) combines them with its own base class, which adds authentication where it applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from tornado import web
from tornado.iostream import StreamClosedError

from hana_protocol.errors import HanaError, InvalidRequest, RequestCanceled

if TYPE_CHECKING:
    from hana_server.service import HanaService

log = logging.getLogger("hana.api")

M = TypeVar("M", bound=BaseModel)


def validation_message(error: ValidationError) -> str:
    """One readable line naming the field at fault."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class HanaHandlerMixin(web.RequestHandler):
    """Base of all hana API handlers."""

    _task: asyncio.Task[Any] | None = None
    _streaming = False

    @property
    def service(self) -> HanaService:
        return self.settings["hana_service"]

    # ------------------------------------------------------------------ input

    def parse(self, schema: type[M]) -> M:
        body = self.request.body
        if not body or not body.strip():
            raise InvalidRequest("missing request body")
        try:
            data = json.loads(body)
        except json.JSONDecodeError as error:
            raise InvalidRequest(f"invalid JSON: {error.msg} at line {error.lineno}") from error
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        try:
            return schema.model_validate(data)
        except ValidationError as error:
            raise InvalidRequest(validation_message(error)) from error

    # ------------------------------------------------------------------ output

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        else:
            message = self._reason
        # send_error cleared the response: headers a refusal needs (CORS, WWW-Authenticate) again
        for name, value in getattr(error, "headers", {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message}))

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work`, cancelling it when the client disconnects; errors in Ollama's shape."""
        self._task = asyncio.ensure_future(work())
        try:
            await self._task
        except asyncio.CancelledError:
            if self.request.connection and self._task.cancelled():
                log.info("%s %s: client disconnected", self.request.method, self.request.path)
                return
            raise
        except HanaError as error:
            self.fail(error)
        except StreamClosedError:
            log.info("%s %s: client disconnected", self.request.method, self.request.path)
        finally:
            self._task = None

    def fail(self, error: HanaError) -> None:
        if isinstance(error, RequestCanceled) or self._finished:
            return
        if self._streaming:
            # Headers are gone: Ollama ends a started stream with an error line.
            self.write(json.dumps({"error": error.message}) + "\n")
            self.finish()
        else:
            self.send_json({"error": error.message}, error.status)

    def on_finish(self) -> None:
        """Count the answered request in the service's metrics (refusals at the door too)."""
        metrics = getattr(self.settings.get("hana_service"), "metrics", None)
        if metrics is not None:
            metrics.request_finished(
                getattr(self, "hana_route", "other"),
                self.request.method or "",
                self.get_status(),
                self.request.request_time(),
            )

    def on_connection_close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def stream_ndjson(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        """Write one JSON object per line, flushed per chunk."""
        self.set_header("Content-Type", "application/x-ndjson")
        # aclosing: a disconnect lands in flush(), outside the generator; closing it at once
        # releases the runner slot instead of waiting for garbage collection.
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                self.write(json.dumps(chunk) + "\n")
                await self.flush()
                self._streaming = True
        self.finish()
