"""Who may call the shared port: the Origin check, CORS preflight, the optional API key, and
the decision whether a bind address may be served at all.

Decided at the door (`SharedPortHandler.prepare`), before any handler work, on every route:

- a request carrying an `Origin` that is neither the server itself nor on the allow-list
  (Ollama's built-in list + `HANA_ORIGINS` / `OLLAMA_ORIGINS`) is refused 403, as Ollama's CORS
  middleware does; allowed origins get `Access-Control-Allow-Origin`;
- `OPTIONS` preflights of allowed origins are answered 204 with Ollama's CORS headers and need
  no key (browsers never send credentials on a preflight);
- with an API key configured, every other request needs `Authorization: Bearer <key>` (what the
  official clients send from `OLLAMA_API_KEY` / `api_key`), compared in constant time, else 401
  `{"error": "unauthorized: ..."}`.

The Jupyter routes (`{base_url}hana/`) do not pass through here: they keep Jupyter's auth.
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tornado import web

# Ollama's envconfig.AllowedOrigins() built-ins: loopback and unspecified hosts on any port, plus
# the schemes of desktop apps and editors.
LOCAL_ORIGINS = (
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
)

# What Ollama's CORS config (gin-contrib/cors defaults + its header list) answers a preflight.
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
    "Access-Control-Allow-Headers": (
        "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,OpenAI-Beta,"
        "x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,"
        "x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,"
        "x-stainless-async,x-stainless-helper-method,x-stainless-timeout"
    ),
    "Access-Control-Max-Age": "43200",
}

UNAUTHORIZED = (
    "unauthorized: this server requires an API key; send 'Authorization: Bearer <key>' "
    "(clients read HANA_API_KEY, then OLLAMA_API_KEY)"
)
ORIGIN_REFUSED = "origin not allowed: add it to HANA_ORIGINS (or OLLAMA_ORIGINS) to allow it"

OPT_OUT_ENV = "HANA_ALLOW_UNAUTHENTICATED_NETWORK"


class Refused(web.HTTPError):
    """A request refused at the door; `headers` survive tornado's `send_error` (which clears
    the response) because `HanaHandlerMixin.write_error` sets them again."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.headers = dict(headers or {})


class UnsafeBind(RuntimeError):
    """The shared port would be reachable from the network without an API key."""


def origin_allowed(origin: str, host: str, extra: Iterable[str] = ()) -> bool:
    """True if a request from `origin` to Host `host` may proceed (Ollama's CORS rule):
    same-origin requests always, others when a pattern of the allow-list matches."""
    if origin in (f"http://{host}", f"https://{host}"):
        return True
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in (*LOCAL_ORIGINS, *extra))


def key_matches(authorization: str | None, api_key: str) -> bool:
    """True if an `Authorization` header carries `api_key` as a Bearer token (constant time)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def is_loopback(host: str) -> bool:
    """True if binding `host` reaches this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_bind(host: str, api_key: str, allow_unauthenticated: bool) -> str | None:
    """The warning to log for serving the shared port on `host`, or None for loopback.

    Raises `UnsafeBind` when `host` reaches beyond this machine, no key is set and the operator
    did not opt out explicitly.
    """
    if is_loopback(host):
        return None
    where = f"the shared port on {host} is reachable from other machines"
    if api_key:
        return f"hana: {where}; every request needs the API key (Authorization: Bearer)"
    if not allow_unauthenticated:
        raise UnsafeBind(
            f"hana: refusing to serve {host} without an API key: anyone on the network could use "
            "and change the models. Set HANA_API_KEY (c.HanaApp.api_key), bind 127.0.0.1, or opt "
            f"out with {OPT_OUT_ENV}=1 (c.HanaApp.allow_unauthenticated_network = True)"
        )
    return (
        f"hana: {where} WITHOUT authentication ({OPT_OUT_ENV}): anyone who can reach it can "
        "use, create and delete models"
    )


@dataclass(frozen=True)
class AccessPolicy:
    """The shared port's Origin allow-list and optional key, applied by `check`."""

    origins: tuple[str, ...] = ()
    api_key: str = ""

    def refusal(self, method: str, host: str, headers: Mapping[str, str]) -> Refused | None:
        """Why a request with these headers may not proceed, or None. Needs no body: a hook that
        runs when the headers arrive (before the body is read) can call it too."""
        origin = headers.get("Origin")
        cors: dict[str, str] = {}
        if origin:
            if not origin_allowed(origin, host, self.origins):
                return Refused(403, ORIGIN_REFUSED)
            cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if method == "OPTIONS":
            return None  # a preflight: answered by `preflight`, never carries credentials
        if self.api_key and not key_matches(headers.get("Authorization"), self.api_key):
            return Refused(401, UNAUTHORIZED, {**cors, "WWW-Authenticate": 'Bearer realm="hana"'})
        return None

    def check(self, handler: web.RequestHandler) -> None:
        """Refuse a request that may not proceed (raises `Refused`); else set its CORS header."""
        request = handler.request
        refused = self.refusal(request.method or "", request.host, request.headers)
        if refused is not None:
            raise refused  # tornado logs it with the path
        origin = request.headers.get("Origin")
        if origin:
            handler.set_header("Access-Control-Allow-Origin", origin)
            handler.set_header("Vary", "Origin")


def preflight(handler: web.RequestHandler) -> None:
    """Answer an `OPTIONS` request as Ollama does: 204 with its CORS headers."""
    for name, value in PREFLIGHT_HEADERS.items():
        handler.set_header(name, value)
    handler.set_status(204)
    handler.finish()


def access_policy(settings: Any) -> AccessPolicy:
    """The policy for a `HanaSettings`."""
    return AccessPolicy(origins=tuple(settings.origins), api_key=settings.api_key or "")
