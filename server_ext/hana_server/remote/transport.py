"""The HTTP leg to an upstream, bounded: the async httpx client (never blocks the loop), time
limits, a cap on line length and on the bytes one answer may bring, and upstream failures turned
into Ollama-shaped errors (`{"error": ...}` with a status) instead of tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from hana_protocol.errors import HanaError
from hana_protocol.lines import LineBuffer, LineTooLong
from hana_server.remote.spec import RemoteSpec

log = logging.getLogger("hana.remote")

ERROR_BODY_LIMIT = 64 * 1024  # what is read of an upstream's error answer


@dataclass(frozen=True)
class Limits:
    """What one upstream answer may cost the server."""

    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # longest silence between two bytes (a slow first token too)
    max_line: int = 4 << 20  # one NDJSON line / SSE event
    max_response: int = 64 << 20  # all bytes of one answer


def make_client(limits: Limits) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=limits.connect_timeout, read=limits.read_timeout, write=60.0, pool=None
    )
    # The gates bound concurrency per upstream; the pool must not add a second, hidden queue.
    pool = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, limits=pool, follow_redirects=False, trust_env=False)


def transport_error(spec: RemoteSpec, error: httpx.HTTPError, limits: Limits) -> HanaError:
    """A failure to talk to the upstream as an error a client can act on."""
    where = f"remote host {spec.host}"
    if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError):
        return HanaError(f"{where} is unreachable: {error or type(error).__name__}", status=502)
    if isinstance(error, httpx.TimeoutException):
        return HanaError(
            f"{where} sent nothing for {limits.read_timeout:g} s (timed out)", status=504
        )
    return HanaError(f"{where}: connection failed: {error or type(error).__name__}", status=502)


def upstream_message(body: bytes) -> str:
    """The message of an upstream's error body: Ollama `{"error": str}`, OpenAI/vLLM
    `{"error": {"message"}}` or `{"message"}`, FastAPI `{"detail"}`, else the text."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:500] or "no message"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for value in (error, data.get("message"), data.get("detail")):
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(data)[:500]


def status_error(spec: RemoteSpec, status: int, body: bytes) -> HanaError:
    """An upstream's error answer: same status (as Ollama relays it), a message that says where."""
    message = upstream_message(body)
    if status in (401, 403):
        key = f" (key from {spec.key_env})" if spec.key_env else " (no API key configured)"
        message = f"remote host {spec.host} refused the request{key}: {message}"
    elif status >= 500:
        message = f"remote host {spec.host} failed ({status}): {message}"
    return HanaError(message, status=status)


class Exchange:
    """One request to an upstream; `open()` returns the streaming response or raises a
    HanaError; `lines()` / `json()` read it within the limits; `aclose()` drops the connection
    (a client that left cancels the upstream's work this way)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        spec: RemoteSpec,
        limits: Limits,
        path: str,
        body: dict[str, Any],
    ) -> None:
        self.http, self.spec, self.limits = http, spec, limits
        self.url = spec.host + path
        self.body = body
        self.response: httpx.Response | None = None
        self.received = 0

    async def open(self) -> httpx.Response:
        headers = {"Accept": "application/x-ndjson, text/event-stream, application/json"}
        key = self.spec.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = self.http.build_request("POST", self.url, json=self.body, headers=headers)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise transport_error(self.spec, error, self.limits) from None
        self.response = response
        if response.status_code >= 400:
            body = await self._read_some(ERROR_BODY_LIMIT)
            await self.aclose()
            raise status_error(self.spec, response.status_code, body)
        return response

    async def _read_some(self, limit: int) -> bytes:
        assert self.response is not None
        data = bytearray()
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in self.response.aiter_bytes():
                data += chunk
                if len(data) >= limit:
                    break
        return bytes(data[:limit])

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self.response is not None
        try:
            async for chunk in self.response.aiter_bytes():
                self.received += len(chunk)
                if self.received > self.limits.max_response:
                    raise HanaError(
                        f"remote host {self.spec.host} sent more than "
                        f"{self.limits.max_response} bytes in one answer",
                        status=502,
                    )
                yield chunk
        except httpx.HTTPError as error:
            raise transport_error(self.spec, error, self.limits) from None

    async def lines(self) -> AsyncIterator[bytes]:
        """The answer line by line (NDJSON lines, SSE fields), each at most `max_line` bytes."""
        buffer = LineBuffer(self.limits.max_line)
        async for chunk in self._chunks():
            try:
                lines = buffer.feed(chunk)
            except LineTooLong:
                raise HanaError(
                    f"remote host {self.spec.host} sent a line longer than "
                    f"{self.limits.max_line} bytes",
                    status=502,
                ) from None
            for line in lines:
                yield line.removesuffix(b"\r")
            # The lines of one read go to the client in one flush (api/flushing.py); between
            # reads, the other requests get their turn even while the upstream is ahead.
            await asyncio.sleep(0)
        if (rest := buffer.rest()).strip():
            yield rest

    async def json(self) -> Any:
        """The whole answer as JSON (non-streaming requests)."""
        data = bytearray()
        async for chunk in self._chunks():
            data += chunk
        try:
            return json.loads(data)
        except ValueError:
            raise HanaError(
                f"remote host {self.spec.host} answered with invalid JSON", status=502
            ) from None

    async def aclose(self) -> None:
        """Close the connection. Shielded: the handler's task is often cancelled (the client
        left) while this runs, and a close cut short leaves the upstream generating."""
        if self.response is not None and not self.response.is_closed:
            await asyncio.shield(self.response.aclose())


def parse_line(spec: RemoteSpec, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        raise HanaError(f"remote host {spec.host} sent invalid JSON", status=502) from None
    if not isinstance(value, dict):
        raise HanaError(f"remote host {spec.host} sent invalid JSON", status=502)
    return value
