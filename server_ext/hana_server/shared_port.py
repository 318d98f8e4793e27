"""The shared port: the whole API at the root, like Ollama, outside Jupyter's auth.

It binds loopback by default and, like Ollama, refuses requests whose Host header is not a local
name (a DNS-rebinding guard); Origin, CORS and the optional API key are decided by
`hana_server.access`. Every host (`HanaApp`, `hana serve`, the embedded server) builds its shared
port from this module.

The door is `SharedPortHandler.prepare`: every hana handler streams its body, so `prepare` runs
once the headers are in and before any body byte is read; the Host, Origin and key checks there
hold for every route. The HTTP server itself bounds what a client can hold: the time to send
headers (idle keep-alive time included) and the number of open connections (`LimitedHTTPServer`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from tornado import httpserver, web
from tornado.iostream import IOStream

from hana_protocol.hosts import HostAddress
from hana_server import access
from hana_server.api.routes import build_routes
from hana_server.config import HanaSettings
from hana_server.service import HanaService

log = logging.getLogger("hana")


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
    """Base for handlers on the shared port: host guard, then Origin/CORS and the optional key."""

    def prepare(self) -> None:
        """Runs before any of the body is read (hana handlers stream bodies): refuse here."""
        self.check_host()
        self.check_access()

    def check_host(self) -> None:
        """The DNS-rebinding guard: a loopback-bound port answers local Host names only."""
        if self.settings.get("hana_loopback") and not is_local_host(self.request.host):
            raise web.HTTPError(403, "host not allowed")

    def check_access(self) -> None:
        """Origin (403), CORS headers and the optional API key (401): `hana_server.access`."""
        self.settings["hana_access"].check(self)

    def options(self, *args: Any) -> None:
        access.preflight(self)


def make_shared_port_app(service: HanaService, settings: HanaSettings) -> web.Application:
    """The shared-port application: the whole API at the root, like Ollama.

    Raises `access.UnsafeBind` for a network-reachable host without a key (unless opted out).
    """
    warning = access.check_bind(
        settings.host, settings.api_key, settings.allow_unauthenticated_network
    )
    if warning:
        log.warning("%s", warning)
    return web.Application(
        build_routes("", SharedPortHandler),  # type: ignore[arg-type]
        hana_service=service,
        hana_loopback=access.is_loopback(settings.host),
        hana_access=access.access_policy(settings),
    )


def bind_shared_port(
    app: web.Application, host: str, port: int, *, fallback: bool
) -> tuple[httpserver.HTTPServer, int]:
    """Listen on host:port; if it is taken and `fallback`, on a free port. Returns the port."""
    settings: HanaSettings = app.settings["hana_service"].settings
    server = LimitedHTTPServer(
        app,
        max_connections=settings.max_connections,
        # Per-route body limits are set by each handler once its headers are in; this is only
        # the ceiling (the largest upload), checked before tornado reads a byte.
        max_body_size=max(settings.max_upload_size, settings.max_request_body),
        idle_connection_timeout=settings.header_timeout or None,  # tornado's header timeout
    )
    try:
        sockets = bind_sockets(port, host)
    except OSError as error:
        if not fallback or port == 0:
            raise
        log.warning("port %s:%d is taken (%s); using a free port instead", host, port, error)
        sockets = bind_sockets(0, host)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


class LimitedHTTPServer(httpserver.HTTPServer):
    """tornado's HTTPServer with a cap on open connections: one more is answered 503 and closed,
    so a flood of idle sockets cannot exhaust the process's file descriptors."""

    BUSY = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        b'Connection: close\r\nContent-Length: 41\r\n\r\n{"error":"server busy, please try again"}'
    )

    def initialize(self, *args: Any, max_connections: int = 0, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections

    def handle_stream(self, stream: IOStream, address: tuple) -> None:  # type: ignore[override]
        if self.max_connections and len(self._connections) >= self.max_connections:
            log.warning("shared port: %d connections open, refusing one", len(self._connections))
            stream.write(self.BUSY).add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)


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
    """The URL clients on this machine use for a server bound to host:port (no trailing slash):
    a wildcard address means 127.0.0.1, an IPv6 address goes in brackets."""
    return HostAddress(host=host, port=port).url.rstrip("/")
