"""What every hana handler shares: the service, bounded JSON bodies, Ollama-shaped errors,
streaming.

Handlers are written once as mixins over `tornado.web.RequestHandler`; each host (standalone or
Jupyter) combines them with its own base class, which adds authentication where it applies.

Every request body is streamed (`_stream_request_body`): the host's `prepare` (Host check,
Jupyter auth) runs as soon as the headers are in, before a single body byte is read, and each
route then admits at most its own limit (`body_limit`) with a stall timeout on the way.
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
from hana_protocol.jsonbody import loads_object
from hana_server.api.flushing import BatchedFlush

if TYPE_CHECKING:
    from hana_server.service import HanaService

log = logging.getLogger("hana.api")

M = TypeVar("M", bound=BaseModel)

# What Ollama's router (gin) says when no route or no method matches.
ROUTER_MESSAGES = {404: "404 page not found", 405: "405 method not allowed"}


def validation_message(error: ValidationError) -> str:
    """One readable line naming the field at fault."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def validated(schema: type[M], data: dict[str, Any]) -> M:
    """`data` as `schema`. Validators raise InvalidRequest with Ollama's own message (it passes
    through pydantic untouched); pydantic's own complaints become one line naming the field."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(validation_message(error)) from error


class HanaHandlerMixin(web.RequestHandler):
    """Base of all hana API handlers."""

    _stream_request_body = True  # prepare() runs before any body byte is read
    body_limit_setting = "max_request_body"  # the HanaSettings trait that caps this route's body

    _task: asyncio.Task[Any] | None = None
    _streaming = False
    _body: bytearray | None = None
    _body_timer: asyncio.TimerHandle | None = None

    @property
    def service(self) -> HanaService:
        return self.settings["hana_service"]

    # ------------------------------------------------------------------ input

    async def prepare(self) -> None:  # type: ignore[override]
        """The host's checks first (nothing of the body is read yet), then this route's limits."""
        result = super().prepare()
        if result is not None:
            await result
        if self._finished:
            return
        settings = self.service.settings
        limit = int(getattr(settings, self.body_limit_setting))
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise web.HTTPError(413, f"request body too large: {length} bytes (limit {limit})")
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(limit)  # chunked bodies: tornado stops at the limit
        self._body = bytearray()
        body_done = getattr(self.request, "_body_future", None)
        if body_done is not None and not body_done.done():
            self._arm_body_timer(settings.body_idle_timeout)
            body_done.add_done_callback(lambda _: self._disarm_body_timer())

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self._arm_body_timer(self.service.settings.body_idle_timeout)
        self.receive_chunk(chunk)
        return None

    def receive_chunk(self, chunk: bytes) -> None:
        """Keep a chunk of the body (JSON routes; uploads write it to disk instead)."""
        if self._body is not None:
            self._body += chunk

    @property
    def body_bytes(self) -> bytes:
        """The whole request body (the verb runs only once it is complete)."""
        return bytes(self._body) if self._body is not None else self.request.body

    def _arm_body_timer(self, seconds: float) -> None:
        self._disarm_body_timer()
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._body_timer = loop.call_later(seconds, self._body_stalled, seconds)

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_stalled(self, seconds: float) -> None:
        # A half-sent request holds a handler and a file descriptor: close it, as nothing can
        # be answered to a client that stopped mid-body.
        log.info(
            "%s %s: no body bytes for %.0f s, closing",
            self.request.method,
            self.request.path,
            seconds,
        )
        self._body_timer = None
        if self.request.connection is not None:
            self.request.connection.close()  # type: ignore[attr-defined]

    def parse(self, schema: type[M]) -> M:
        """The body as `schema`; anything malformed is an InvalidRequest (400), never a 500."""
        return validated(schema, loads_object(self.body_bytes))

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
            message = ROUTER_MESSAGES.get(status_code, self._reason)
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

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        body_done = getattr(self.request, "_body_future", None)
        if body_done is not None and not body_done.done() and not self._headers_written:
            # Refused before the body was read (Host check, 413): tornado then closes the
            # connection, so tell the client not to send its next request on it.
            self.set_header("Connection", "close")
        return super().finish(*args, **kwargs)

    def count_request(self) -> None:
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
        self._disarm_body_timer()
        super().on_connection_close()  # ends a body still being read, so the handler returns
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def on_finish(self) -> None:
        self._disarm_body_timer()
        self.count_request()
        super().on_finish()

    async def stream_ndjson(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        """Write one JSON object per line; chunks ready together leave in one flush."""
        self.set_header("Content-Type", "application/x-ndjson")
        await self.stream_lines(chunks, lambda chunk: json.dumps(chunk) + "\n")
        self.finish()

    async def stream_lines(
        self, items: AsyncIterator[dict[str, Any]], encode: Callable[[dict[str, Any]], str]
    ) -> None:
        """Write `encode(item)` for each item, flushed once per turn of the event loop
        (flushing.BatchedFlush); from the first item on, the answer is a stream (see fail)."""
        flush = BatchedFlush(self)
        # aclosing: a disconnect lands in a flush, outside the generator; closing it at once
        # releases the runner slot instead of waiting for garbage collection.
        try:
            async with contextlib.aclosing(items):
                async for item in items:
                    self.write(encode(item))
                    self._streaming = True
                    await flush.wrote()
        finally:
            flush.cancel()  # finish() or fail() writes what is left


class NotFoundHandler(HanaHandlerMixin):
    """Every path no route matches: Ollama's 404 as JSON. The host's door (Host check, auth) runs
    first in `prepare`; the 404 comes after the (capped) body, so the connection stays usable."""

    async def not_found(self, *args: Any) -> None:
        raise web.HTTPError(404)

    get = post = put = delete = patch = head = options = not_found
