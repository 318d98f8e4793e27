"""The background event loop behind every sync twin: one asyncio loop in a daemon thread.

Sync twins run their coroutine here, never on the caller's loop: a notebook cell already runs
inside ipykernel's loop, where `asyncio.run` is refused. A KeyboardInterrupt while a caller waits
cancels the coroutine, which closes its HTTP streams, so the server stops generating.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class BackgroundTask:
    """A coroutine running on a `BackgroundLoop`, seen from another thread.

    Unlike `concurrent.futures.Future.cancel`, `cancel(wait=...)` waits until the coroutine has
    really unwound (its HTTP streams closed), which an interrupted cell needs before it returns.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop = loop
        self._done = threading.Event()
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(lambda _task: self._done.set())
        if self._cancel_requested:
            self._task.cancel()

    def _cancel_on_loop(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()

    def done(self) -> bool:
        """True once the coroutine has finished, failed or been cancelled."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or `timeout` seconds passed; True if done. Interruptible by SIGINT."""
        return self._done.wait(timeout)

    def result(self) -> Any:
        """Block until done and return the coroutine's result or raise its exception.

        A KeyboardInterrupt while waiting cancels the coroutine (closing its connections) and is
        re-raised.
        """
        try:
            self._done.wait()
        except KeyboardInterrupt:
            self.cancel(wait=5.0)
            raise
        assert self._task is not None
        return self._task.result()

    def cancel(self, wait: float = 0.0) -> bool:
        """Cancel the coroutine; wait up to `wait` seconds for it to unwind. True if it has."""
        if not self._done.is_set():
            self._loop.call_soon_threadsafe(self._cancel_on_loop)
        return self._done.wait(wait) if wait > 0 else self._done.is_set()


class BackgroundLoop:
    """An asyncio loop in a daemon thread, shared by every client in the process.

    Sync twins and `%%hana` streams run here, so they work the same inside ipykernel (whose own loop
    is busy running the cell) and in plain Python.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="hana-client-loop", daemon=True
        )
        self._thread.start()

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread (where blocking on it would deadlock)."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, Any]) -> BackgroundTask:
        """Start `coro` on the loop and return a handle to wait for or cancel it."""
        return BackgroundTask(self.loop, coro)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and block for its result (see `BackgroundTask.result`)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a sync HanaClient method was called on hana's own loop; await async_x"
            )
        result: T = self.submit(coro).result()
        return result


class Once(Generic[T]):
    """A process-wide object made on first use, by whichever thread asks first."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self.value is None:
                self.value = self._make()
            return self.value


_background_loop = Once(BackgroundLoop)


def background_loop() -> BackgroundLoop:
    """The process-wide `BackgroundLoop`, started on first use."""
    return _background_loop.get()


def background_loop_if_started() -> BackgroundLoop | None:
    """The process-wide loop if something started it, else None (closing needs no new loop)."""
    return _background_loop.value
