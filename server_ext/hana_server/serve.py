"""Hosts without Jupyter: `hana serve` (like `ollama serve`) and an embedded server for kernels.

The shared port binds loopback by default and, like Ollama, refuses requests whose Host header is
not a local name (a DNS-rebinding guard), and answers CORS only for local origins plus `origins`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tornado import httpserver, web

from hana_server.api.routes import build_routes
from hana_server.config import HanaSettings
from hana_server.service import HanaService

log = logging.getLogger("hana")

LOCAL_ORIGINS = [
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
]


def is_local_host(host: str) -> bool:
    """Host header values a loopback-bound server accepts."""
    name = urlsplit("//" + host).hostname or ""
    if name in ("localhost", socket.gethostname().lower()) or name.endswith(
        (".localhost", ".local", ".internal")
    ):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


class SharedPortHandler(web.RequestHandler):
    """Base for handlers on the shared port: host guard and CORS, no auth (loopback only)."""

    def prepare(self) -> None:
        if self.settings.get("hana_loopback") and not is_local_host(self.request.host):
            raise web.HTTPError(403, "host not allowed")
        origin = self.request.headers.get("Origin")
        if origin and self._origin_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def _origin_allowed(self, origin: str) -> bool:
        patterns = LOCAL_ORIGINS + list(self.settings.get("hana_origins", []))
        return any(fnmatch.fnmatch(origin, p) for p in patterns)

    def options(self, *args: Any) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, HEAD, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
            "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
            "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
            "x-stainless-async, x-stainless-helper-method, x-stainless-timeout",
        )
        self.set_status(204)
        self.finish()


def make_app(service: HanaService, settings: HanaSettings) -> web.Application:
    """The shared-port application: the whole API at the root, like Ollama."""
    loopback = _is_loopback(settings.host)
    return web.Application(
        build_routes("", SharedPortHandler),  # type: ignore[arg-type]
        hana_service=service,
        hana_loopback=loopback,
        hana_origins=settings.origins,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_shared_port(
    app: web.Application, host: str, port: int, *, fallback: bool
) -> tuple[httpserver.HTTPServer, int]:
    """Listen on host:port; if it is taken and `fallback`, on a free port. Returns the port."""
    server = httpserver.HTTPServer(app, max_body_size=1 << 40, idle_connection_timeout=3600)
    try:
        sockets = bind_sockets(port, host)
    except OSError as error:
        if not fallback or port == 0:
            raise
        log.warning("port %s:%d is taken (%s); using a free port instead", host, port, error)
        sockets = bind_sockets(0, host)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


def bind_sockets(port: int, host: str) -> list[socket.socket]:
    from tornado.netutil import bind_sockets as tornado_bind

    family = socket.AF_INET if ":" not in host else socket.AF_INET6
    if port:
        # tornado leaves the socket of a failed bind open (a ResourceWarning): find out first
        # with a socket that is always closed, then bind for real.
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado does
            probe.bind((host, port))
    return tornado_bind(port, host, family=family)


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


async def serve(
    settings: HanaSettings, *, on_listening: Callable[[str], None] | None = None
) -> None:
    """Run the server until SIGINT/SIGTERM; every runner is terminated on the way out.

    `on_listening(url)` is called once the port is bound (the embedded host announces it).
    """
    service = HanaService(settings)
    await service.start()
    app = make_app(service, settings)
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
