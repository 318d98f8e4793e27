"""The `hana serve` host (like `ollama serve`): the shared port without Jupyter.

It also runs as a kernel's embedded server: `hana serve --parent-pid PID` announces its URL and
exits with its parent (hana_client.discovery starts it that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.shared_port import bind_shared_port, make_shared_port_app, url_for

log = logging.getLogger("hana")


async def serve(
    settings: HanaSettings, *, on_listening: Callable[[str], None] | None = None
) -> None:
    """Run the server until SIGINT/SIGTERM; every runner is terminated on the way out.

    `on_listening(url)` is called once the port is bound (the embedded host announces it).
    """
    service = HanaService(settings)
    app = make_shared_port_app(service, settings)  # first: it may refuse the bind address
    await service.start()
    server, port = bind_shared_port(app, settings.host, settings.port, fallback=False)
    service.url = url_for(settings.host, port)
    log.info("hana is listening on %s", service.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_listening is not None:
        on_listening(service.url)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: stopping runners")
        server.stop()
        await service.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 2)
