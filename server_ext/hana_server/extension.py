"""HanaApp: the Jupyter host of the model server (wiring only; the logic lives in HanaService).

One `HanaService` per Jupyter server, reachable two ways through the same handler classes:

- `{base_url}hana/api/...` and `{base_url}hana/v1/...` behind Jupyter's authentication and
  authorization (token header, or cookie + XSRF from the browser; JupyterHub RBAC applies);
- the shared loopback port (`c.HanaApp.port`, 11434 like Ollama; Origin check and the optional
  `c.HanaApp.api_key`, see `hana_server.access`), so `curl`, the official `ollama` client and
  other users' notebooks reach the same scheduler.

Kernels started by this server find it with no configuration: `HANA_URL` and `OLLAMA_HOST` (and
the key as `HANA_API_KEY` / `OLLAMA_API_KEY` when one is set) are exported into the server's
environment before any kernel starts, and a runtime file `hana-<pid>.json` records the URLs for
programs started elsewhere.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import httpserver, web
from traitlets import Bool, default

from hana_server import __version__
from hana_server.api import metrics, state
from hana_server.api.routes import build_routes
from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.shared_port import bind_shared_port, make_shared_port_app, url_for

AUTH_RESOURCE = "hana"
"""The resource name authorizers see (JupyterHub scopes, custom `Authorizer` classes)."""

# Polled by the Lab status bar, the runner panel and Prometheus: a tab left open or a scraper
# must not keep an idle server alive (JupyterHub culler, ServerApp.shutdown_no_activity_timeout).
UNTRACKED_HANDLERS: tuple[type[web.RequestHandler], ...] = (
    state.StatusHandler,
    state.EventsHandler,
    metrics.MetricsHandler,
)

# What kernels and tools read to find the server; restored on stop so an embedding process (or a
# test run) sees its own values again.
EXPORTED_ENV = ("HANA_URL", "HANA_TOKEN", "OLLAMA_HOST", "HANA_API_KEY", "OLLAMA_API_KEY")


class HanaJupyterHandler(ExtensionHandlerMixin, APIHandler):  # type: ignore[misc]
    """Jupyter's base for hana's API handlers: authenticated and authorized on every verb.

    `build_routes` puts the API mixin first (`class X(Mixin, HanaJupyterHandler)`), so the
    mixin's `write_error`/`fail` win and errors keep Ollama's `{"error": ...}` shape.
    """

    auth_resource = AUTH_RESOURCE

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every verb a route class gets from its API mixin is wrapped in @web.authenticated:
        # the server's startup audit (JupyterServerAuthWarning) then sees each one protected,
        # and a new verb added to a mixin can never be served anonymously by mistake.
        for verb in cls.SUPPORTED_METHODS:
            method = getattr(cls, verb.lower())
            if (
                method is web.RequestHandler._unimplemented_method
                or getattr(method, "__allow_unauthenticated", False)  # CORS preflight
                or getattr(method, "_hana_authenticated", False)
            ):
                continue
            wrapped = web.authenticated(method)
            wrapped._hana_authenticated = True  # type: ignore[attr-defined]
            setattr(cls, verb.lower(), wrapped)
        if issubclass(cls, UNTRACKED_HANDLERS):
            cls._track_activity = False

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate and authorize before any work, also when the body is streamed in."""
        await super().prepare()  # identity, host check, CORS, XSRF for cookie-authenticated calls
        method = getattr(self, (self.request.method or "").lower(), None)
        if getattr(method, "__allow_unauthenticated", False):
            return
        # Checked here, not only by the verb decorator: a blob upload writes the body to disk
        # (data_received) before the verb runs, and ServerApp.allow_unauthenticated_access=True
        # must not open the model server to anonymous callers.
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "authentication required")
        action = HTTP_METHOD_TO_AUTH_ACTION.get(self.request.method or "", "write")
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, action, AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403, f"user is not authorized to {action} {AUTH_RESOURCE}")

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        """Keep the handler's own Content-Type (plain text, NDJSON, SSE); APIHandler forces JSON."""
        kwargs.setdefault("set_content_type", self._headers.get("Content-Type", "application/json"))
        return super().finish(*args, **kwargs)


class HanaApp(ExtensionApp, HanaSettings):
    """The hana model server inside a Jupyter server (`c.HanaApp.<setting>`)."""

    name = "hana_server"
    description = "An Ollama-compatible model server hosted by the Jupyter server."
    version = __version__

    share_port = Bool(
        True,
        help="Also serve the API outside Jupyter's auth on the loopback port `port` (like "
        "Ollama; `api_key` protects it), for curl, the ollama/openai clients and other users' "
        "notebooks. False: only {base_url}hana/ behind Jupyter auth.",
    ).tag(config=True)

    port_fallback = Bool(
        True,
        help="If `port` is taken (e.g. by a real Ollama), log it and use a free port instead "
        "(published in HANA_URL, OLLAMA_HOST and the runtime file). False: fail to load.",
    ).tag(config=True)

    @default("host")
    def _default_host(self) -> str:
        # The shared port has no authentication: loopback unless configured explicitly. The
        # host part of OLLAMA_HOST is ignored here, as it is often 0.0.0.0 for a real Ollama.
        return "127.0.0.1"

    service: HanaService | None = None
    _shared_server: httpserver.HTTPServer | None = None
    _runtime_file: Path | None = None
    _saved_env: dict[str, str | None] | None = None
    _exported_env: dict[str, str] | None = None
    _stopped = False

    # ------------------------------------------------------------ initialize (loop not running)

    def initialize_settings(self) -> None:
        """Create the service and bind the shared port, so its URL is known before kernels start."""
        self.service = HanaService(self)
        self.settings["hana_service"] = self.service
        if self.share_port:
            self._bind_shared_port()
        if self.service.url is None:
            self.log.info("hana %s: Ollama API at %s (Jupyter auth)", __version__, self.api_path)
        else:
            self.log.info(
                "hana %s: Ollama API at %s (Jupyter auth) and %s (shared port, %s)",
                __version__,
                self.api_path,
                self.service.url,
                "API key required" if self.api_key else "no key",
            )
        self._write_runtime_file()

    def initialize_handlers(self) -> None:
        """The whole API under `{base_url}hana/`, with Jupyter's auth."""
        self.handlers.extend(build_routes("/hana", HanaJupyterHandler))

    @property
    def api_path(self) -> str:
        """`{base_url}hana/`: where the authenticated API lives on the Jupyter server."""
        base_url = self.serverapp.base_url if self.serverapp is not None else "/"
        return url_path_join(base_url, "hana/")

    def _bind_shared_port(self) -> None:
        assert self.service is not None
        app = make_shared_port_app(self.service, self)  # refuses an unprotected network bind
        try:
            server, port = bind_shared_port(app, self.host, self.port, fallback=self.port_fallback)
        except OSError as error:
            raise RuntimeError(
                f"hana: cannot listen on {self.host}:{self.port} ({error}); free the port, "
                "set c.HanaApp.port, or c.HanaApp.port_fallback = True"
            ) from error
        self._shared_server = server
        self.service.url = url_for(self.host, port)
        if port != self.port and self.port != 0:
            self.log.warning(
                "hana: port %d is taken, the shared API is on %s instead",
                self.port,
                self.service.url,
            )
        self._export_env(HANA_URL=self.service.url, OLLAMA_HOST=self.service.url.split("//", 1)[1])
        if self.api_key:
            # HanaClient reads HANA_API_KEY; the official ollama client in a kernel OLLAMA_API_KEY
            # (it already talks to this server through the exported OLLAMA_HOST).
            self._export_env(HANA_API_KEY=self.api_key, OLLAMA_API_KEY=self.api_key)

    def _export_env(self, **values: str) -> None:
        """Put discovery variables into os.environ: every kernel started later inherits them."""
        if self._saved_env is None:
            self._saved_env = {name: os.environ.get(name) for name in EXPORTED_ENV}
            self._exported_env = {}
        assert self._exported_env is not None
        for name, value in values.items():
            os.environ[name] = value
            self._exported_env[name] = value

    def _restore_env(self) -> None:
        if self._saved_env is None or self._exported_env is None:
            return
        for name, value in self._exported_env.items():
            if os.environ.get(name) != value:
                continue  # changed by someone else since: theirs now
            previous = self._saved_env.get(name)
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved_env = self._exported_env = None

    def _write_runtime_file(self) -> None:
        """`hana-<pid>.json` beside `jpserver-<pid>.json`, for programs started elsewhere."""
        assert self.serverapp is not None and self.service is not None
        path = Path(self.serverapp.runtime_dir) / f"hana-{os.getpid()}.json"
        info = {
            "url": self.service.url,
            "base_url": self.api_path,
            "pid": os.getpid(),
            "version": __version__,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(path.name + ".tmp")
            temp.write_text(json.dumps(info, indent=2) + "\n")
            temp.replace(path)
        except OSError as error:  # discovery by env still works
            self.log.warning("hana: could not write %s: %s", path, error)
            return
        self._runtime_file = path
        # Also when the server exits without stopping its extensions (e.g. a failed start).
        atexit.register(self._remove_runtime_file)

    def _remove_runtime_file(self) -> None:
        if self._runtime_file is not None:
            with contextlib.suppress(OSError):
                self._runtime_file.unlink()
            self._runtime_file = None

    # ------------------------------------------------------------------ start (loop running)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the service (store, bundled model registration) once the loop runs."""
        assert self.service is not None
        await self.service.start()
        if not self.share_port:
            self._export_jupyter_url(serverapp)

    def _export_jupyter_url(self, serverapp: Any) -> None:
        # Without the shared port, kernels use the authenticated routes. The Jupyter port is only
        # final once its HTTP server is bound (port_retries), so this waits for the start hook.
        url = serverapp.connection_url
        if not url.startswith("http"):
            return  # a unix socket: HanaClient cannot use it
        values = {"HANA_URL": url_path_join(url, "hana")}
        token = serverapp.identity_provider.token
        if token:
            values["HANA_TOKEN"] = token
        self._export_env(**values)

    # ---------------------------------------------------------------------------- runtime

    def current_activity(self) -> bool:
        """True while a request generates or waits or a model is pulled, so idle culling leaves
        the server running."""
        service = self.service
        return service is not None and (service.scheduler.has_work() or service.pulls.active)

    # ------------------------------------------------------------------------------- stop

    async def stop_extension(self) -> None:
        """Terminate every runner (before Jupyter stops kernels) and unpublish the URLs."""
        if self._stopped:
            return
        self._stopped = True
        self.log.info("hana: stopping runners")
        if self._shared_server is not None:
            try:
                self._shared_server.stop()
            except Exception:
                self.log.exception("hana: could not stop the shared port")
        if self.service is not None:
            try:
                await self.service.stop()
            except Exception:  # one failure must not abort the rest of Jupyter's cleanup
                self.log.exception("hana: could not stop the model server cleanly")
        if self._shared_server is not None:
            # Streams were ended by the runners' exit; do not wait on a client that lingers.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._shared_server.close_all_connections(), 2)
        self._remove_runtime_file()
        self._restore_env()


main = HanaApp.launch_instance
"""A Jupyter server with hana (`python -m hana_server.extension --help-all` lists every setting)."""

if __name__ == "__main__":
    # As a script this module is `__main__`: launch the class the server's loader imports, or
    # the server would load a second HanaApp.
    from hana_server.extension import main as launch

    launch()
