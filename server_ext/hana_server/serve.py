"""Hosts without Jupyter: `hana serve` (like `ollama serve`) and an embedded server for kernels.

Both serve the shared port (hana_server.shared_port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading

from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.shared_port import bind_shared_port, make_shared_port_app, url_for

log = logging.getLogger("hana")


async def serve(settings: HanaSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run the server until SIGINT/SIGTERM; every runner is terminated on the way out."""
    service = HanaService(settings)
    await service.start()
    app = make_shared_port_app(service, settings)
    server, port = bind_shared_port(app, settings.host, settings.port, fallback=False)
    service.url = url_for(settings.host, port)
    log.info("hana is listening on %s", service.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: stopping runners")
        server.stop()
        await service.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 2)


class EmbeddedServer:
    """A hana server on a thread of its own, for kernels that have no server to talk to."""

    def __init__(self, settings: HanaSettings) -> None:
        self.settings = settings
        self.url = ""
        self.service: HanaService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @classmethod
    def start(cls, settings: HanaSettings | None = None, *, port: int = 0) -> EmbeddedServer:
        """Start on 127.0.0.1 (any free port unless `port` is given) and wait until it answers."""
        settings = settings or HanaSettings()
        settings.host, settings.port = "127.0.0.1", port
        server = cls(settings)
        server._thread = threading.Thread(target=server._run, name="hana-server", daemon=True)
        server._thread.start()
        server._started.wait()
        if server._error is not None:
            raise server._error
        return server

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.service = HanaService(self.settings)
            await self.service.start()
            app = make_shared_port_app(self.service, self.settings)
            server, port = bind_shared_port(app, "127.0.0.1", self.settings.port, fallback=True)
            self.url = self.service.url = url_for("127.0.0.1", port)
        except BaseException as error:  # surfaced to the thread that called start()
            self._error = error
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        server.stop()
        await self.service.stop()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and every runner it started."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
