"""Talking to an Ollama-compatible registry over HTTP: URLs, the bearer-token challenge, manifests,
and where a blob's bytes are (the direct URL a blob request redirects to).

Errors read as Ollama's (reference/ollama-registry.md §2.1): a 404 is `file does not exist`, a
second 401 `unauthorized: access denied`, other statuses `<code>: <body>`; the caller prefixes
manifest errors with `pull model manifest: `.
"""

from __future__ import annotations

import base64
import logging
import os
import platform
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpcore
import httpx

from hana_protocol.errors import HanaError
from hana_server import __version__
from hana_server.store.names import ModelName

log = logging.getLogger("hana.pull")

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# The registry gates new models on the `ollama/x.y.z` agent version (412 for an old one).
OLLAMA_AGENT_VERSION = "0.13.0"
MAX_REDIRECTS = 10
READ_BYTES = 1 << 20
STALL_SECONDS = 30.0  # no byte for this long: a part's attempt restarts from its saved offset
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def user_agent() -> str:
    """`ollama/<version> (<arch> <os>) hana/<version>`; $HANA_REGISTRY_USER_AGENT overrides it."""
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    default = (
        f"ollama/{OLLAMA_AGENT_VERSION} ({machine} {platform.system().lower()}) hana/{__version__}"
    )
    return os.environ.get("HANA_REGISTRY_USER_AGENT") or default


class RegistryError(HanaError):
    """The registry answered with an error, or could not be reached."""


def registry_base(name: ModelName, insecure: bool) -> str:
    """`https://<host>`, or `http://` with `insecure` (as Ollama: TLS is never half-disabled)."""
    return f"{'http' if insecure else 'https'}://{name.host}"


def manifest_url(name: ModelName, insecure: bool) -> str:
    return f"{registry_base(name, insecure)}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"


def blob_url(name: ModelName, digest: str, insecure: bool) -> str:
    return f"{registry_base(name, insecure)}/v2/{name.namespace}/{name.model}/blobs/{digest}"


def _transport_message(method: str, url: str, error: httpx.HTTPError) -> str:
    detail = str(error) or type(error).__name__
    return f'{method.capitalize()} "{url}": {detail}'


@dataclass
class BlobSource:
    """Where a blob's bytes come from: a direct URL for Range requests, with auth if it is the
    registry itself (a plain OCI registry serves blobs without redirecting)."""

    url: str
    headers: dict[str, str]


class RegistrySession:
    """One pull's conversation with one registry: its bearer token (not kept across pulls)."""

    def __init__(self, client: httpx.AsyncClient, name: ModelName, insecure: bool) -> None:
        self.client = client
        self.name = name
        self.insecure = insecure
        self.token: str | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": user_agent(), **(extra or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _send(
        self, method: str, url: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send a registry request (streamed, redirects not followed), answering one 401 with
        the token flow; the caller closes the response."""
        for attempt in range(2):
            request = self.client.build_request(method, url, headers=self._headers(headers))
            try:
                response = await self.client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as error:
                raise RegistryError(_transport_message(method, url, error)) from error
            if response.status_code != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            await response.aclose()
            if attempt == 1:
                break
            await self._authenticate(challenge)
        raise RegistryError("unauthorized: access denied")

    async def _authenticate(self, challenge: str) -> None:
        """Get an anonymous bearer token from the challenge's realm (reference §2.2)."""
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm", "")
        want = urlsplit(registry_base(self.name, self.insecure)).netloc
        got = urlsplit(realm).netloc
        if got != want:
            raise RegistryError(f'realm host "{got}" does not match original host "{want}"')
        query = [("service", params.get("service", ""))]
        query += [("scope", scope) for scope in params.get("scope", "").split()]
        query += [("ts", str(int(time.time())))]
        query += [("nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="))]
        url = realm + ("&" if "?" in realm else "?") + urlencode(sorted(query))
        try:
            response = await self.client.get(url, headers={"User-Agent": user_agent()})
        except httpx.HTTPError as error:
            raise RegistryError(_transport_message("GET", url, error)) from error
        if response.status_code >= 400:
            raise RegistryError(f"{response.status_code}: {response.text}")
        try:
            self.token = response.json()["token"]
        except (ValueError, KeyError, TypeError) as error:
            raise RegistryError(f"token endpoint {realm} sent no token") from error

    async def manifest(self) -> bytes:
        """The manifest's bytes, exactly as the registry sent them."""
        url = manifest_url(self.name, self.insecure)
        response = await self._send("GET", url, {"Accept": MEDIA_MANIFEST})
        try:
            body = await response.aread()
        except httpx.HTTPError as error:
            raise RegistryError(_transport_message("GET", url, error)) from error
        finally:
            await response.aclose()
        if response.status_code == 404:
            raise RegistryError("file does not exist", status=404)
        if response.status_code >= 400:
            raise RegistryError(
                f"{response.status_code}: {body.decode(errors='replace')}",
                status=response.status_code,
            )
        return body

    async def blob_source(self, digest: str) -> BlobSource:
        """Follow the blob URL's redirects while they stay on the registry's host; the first
        redirect to another host (the CDN) is the direct URL. A 200 means the registry serves
        the bytes itself (plain OCI registries do; Ollama fails there, hana does not)."""
        url = blob_url(self.name, digest, self.insecure)
        registry_host = urlsplit(url).hostname
        for _ in range(MAX_REDIRECTS):
            response = await self._send("GET", url)
            await response.aclose()  # the body is not read here: Range requests fetch it
            status = response.status_code
            if status == 404:
                raise RegistryError("file does not exist", status=404)
            if status >= 400:
                raise RegistryError(f"{status}: {response.reason_phrase}", status=status)
            if status == 200:
                return BlobSource(url, self._headers())
            location = response.headers.get("Location")
            if not response.is_redirect or not location:
                raise RegistryError(f"unexpected status code {status}")
            url = str(response.url.join(location))
            if urlsplit(url).hostname != registry_host:
                # The CDN gets no Authorization, as with Ollama; signed URLs carry their rights.
                return BlobSource(url, {})
        raise RegistryError(f"stopped after {MAX_REDIRECTS} redirects")


class _LargeReads(httpcore.AsyncNetworkStream):
    """A connection that asks the socket for up to 1 MB per read, not httpcore's 64 KB: a
    multi-GB blob then costs several times fewer event-loop iterations."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _LargeReads(await self._inner.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _LargeReads(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _LargeReads(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def transfer_client(trust_env: bool) -> httpx.AsyncClient:
    """The HTTP client for registries and their CDNs: large socket reads, many connections,
    a read timeout that restarts a stalled part (proxies from the environment if `trust_env`)."""
    transport = httpx.AsyncHTTPTransport(trust_env=trust_env)
    # httpx has no switch for its network backend; its pool takes one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=trust_env),
        max_connections=64,
        max_keepalive_connections=32,
        keepalive_expiry=5.0,
        network_backend=_LargeReadBackend(),
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=trust_env,
        timeout=httpx.Timeout(30.0, read=STALL_SECONDS),
        follow_redirects=True,
    )
