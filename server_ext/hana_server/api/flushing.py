"""`BatchedFlush`: a streaming handler's flushes, one per turn of the event loop.

A stream used to flush after every chunk: one socket write, and one wake-up of the client, per
token. When several chunks become ready in the same turn of the loop (a runner or an upstream
that sent a batch of tokens in one read, see `--stream-interval` in runner/app.py), they now
leave in one write. A client that reads slowly still holds the producer back: before more is
written, the previous flush must have reached the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError


class BatchedFlush:
    """Flushes `handler` at the end of the current turn of the loop, at most once per turn."""

    def __init__(self, handler: web.RequestHandler) -> None:
        self._handler = handler
        self._scheduled: asyncio.Handle | None = None
        self._flushing: asyncio.Future[Any] | None = None

    async def wrote(self) -> None:
        """Call after each `handler.write`: waits while the last flush is still on its way (the
        client reads slowly), raises StreamClosedError once the client is gone."""
        flushing = self._flushing
        if flushing is not None:
            if not flushing.done():
                await flushing
            flushing.result()  # StreamClosedError: the client left
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def cancel(self) -> None:
        """Before `finish()` (which writes what is left) or after an error."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _flush(self) -> None:
        self._scheduled = None
        if self._handler._finished:
            return
        try:
            flushing = self._handler.flush()
        except StreamClosedError as error:  # a closed stream may refuse the write at once
            flushing = asyncio.get_running_loop().create_future()
            flushing.set_exception(error)
        # Seen by the next wrote(); retrieved here too, so a client that left after the last
        # chunk does not log "exception was never retrieved".
        flushing.add_done_callback(_retrieve)
        self._flushing = flushing


def _retrieve(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        future.exception()
