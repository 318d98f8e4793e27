"""The thread that alone owns a llama context, and its hand-off to the runner's event loop.

Commands arrive through an inbox; messages for HTTP handlers leave through an outbox handed to
the loop after a step, at most once per interval. Subclasses (the completion and the embedding
engines) say what one step of work is.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import llama_cpp

from hana_server.runner.sequences import Sink

log = logging.getLogger("hana_server.runner")


class EngineThread(abc.ABC):
    """A thread that alone touches one llama context. Commands arrive through an inbox; messages
    for HTTP handlers leave through an outbox flushed to the event loop after a step, at most
    once per `handoff_interval` seconds unless a message is urgent or the engine goes idle."""

    def __init__(
        self,
        ctx: Any,
        loop: asyncio.AbstractEventLoop,
        threads: int,
        name: str,
        on_crash: Callable[[str], None],
        handoff_interval: float = 0.0,
    ) -> None:
        self.ctx = ctx
        self.handoff_interval = handoff_interval
        self._last_handoff = float("-inf")
        self._urgent = False  # the outbox holds a message that must not wait for the interval
        self._on_crash = on_crash
        self.threads = threads
        self._loop = loop
        self._inbox: deque[Any] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._threads_wanted: int | None = None
        self._outbox: list[tuple[Sink, dict[str, Any]]] = []  # this step's messages
        self._handoff: list[tuple[Sink, dict[str, Any]]] = []  # waiting for the event loop
        self._handoff_lock = threading.Lock()
        self._handoff_scheduled = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._prepare: Callable[[], None] | None = None
        self._prepared = threading.Event()
        self._prepare_error: BaseException | None = None

    def start(self, prepare: Callable[[], None] | None = None) -> None:
        """Start the thread. `prepare` (a warm-up decode) runs on it first; this returns once it
        has, raising what it raised.

        Every decode of the context happens on this one thread. libgomp keeps a team of worker
        threads per thread that starts parallel work, and spins at its barriers only ~1,000 turns
        instead of GOMP_SPINCOUNT while it manages more threads than there are CPUs: a warm-up
        decode on the loader thread measured later decodes ~2x slower while that team lived."""
        self._prepare = prepare
        self._thread.start()
        self._prepared.wait()
        if self._prepare_error is not None:
            self._thread.join()
            raise self._prepare_error

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after its current step; True when it has ended."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def set_threads(self, threads: int) -> None:
        """Applied between two decode steps (llama_set_n_threads is not safe during a decode)."""
        self._threads_wanted = threads
        self._wake.set()

    def _submit(self, command: Any) -> None:
        self._inbox.append(command)
        self._wake.set()

    def _apply_threads(self) -> None:
        wanted = self._threads_wanted
        if wanted is not None:
            self._threads_wanted = None
            llama_cpp.llama_set_n_threads(self.ctx, wanted, wanted)
            self.threads = wanted
            log.info("compute threads set to %d", wanted)

    def _post(self, sink: Sink, message: dict[str, Any], *, urgent: bool = False) -> None:
        self._outbox.append((sink, message))
        self._urgent = self._urgent or urgent

    def _flush_outbox(self, *, force: bool = False) -> None:
        """Hand the outbox to the event loop: when forced (the engine goes idle or is failing),
        when a message is urgent, or when the interval since the last hand-off has passed.

        Waking the loop costs a context switch onto a core a compute thread is using, and on a
        machine with no spare core that stalls the decode (its threads meet at a barrier after
        every graph operation). Handing a fast stream over once per interval, instead of once per
        step, is the same batching the HTTP writes do, moved before the wake-up. While an earlier
        hand-off still waits to run, the messages join it: a busy loop is woken once."""
        if not self._outbox:
            return
        now = time.perf_counter()
        if not (force or self._urgent or now - self._last_handoff >= self.handoff_interval):
            return
        self._last_handoff = now
        self._urgent = False
        with self._handoff_lock:
            self._handoff.extend(self._outbox)
            wake_loop = not self._handoff_scheduled
            self._handoff_scheduled = True
        self._outbox.clear()
        if wake_loop:
            # A closed loop means the runner is exiting and nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the event loop: pass every handed-off message to its request's sink."""
        with self._handoff_lock:
            messages, self._handoff = self._handoff, []
            self._handoff_scheduled = False
        for sink, message in messages:
            sink(message)

    def _idle_wait(self) -> None:
        self._wake.wait()
        self._wake.clear()

    def _main(self) -> None:
        try:
            if self._prepare is not None:
                self._prepare()
        except BaseException as error:
            self._prepare_error = error
            return
        finally:
            self._prepared.set()
        try:
            self._run()
        except BaseException as error:
            log.exception("engine thread failed")
            self._fail_all("runner engine failed; see the runner log")
            self._flush_outbox(force=True)
            # Without its engine the runner can only hang requests: let it exit, the server sees
            # a crashed runner and loads the model again for the next request.
            self._on_crash(f"engine thread failed: {error!r}")

    def _run(self) -> None:
        while not self._stopping:
            while self._inbox:
                self._accept(self._inbox.popleft())
            self._apply_threads()
            more_work = self._work()
            idle = not more_work and not self._inbox
            self._flush_outbox(force=idle or self._stopping)
            if idle:
                self._idle_wait()

    @abc.abstractmethod
    def _accept(self, command: Any) -> None:
        """Take one submitted command into the engine's own queues."""

    @abc.abstractmethod
    def _work(self) -> bool:
        """Do one step of work; True while there is more to do without new commands."""

    @abc.abstractmethod
    def _fail_all(self, message: str) -> None:
        """Answer every request the engine holds with an error (the engine is going away)."""
