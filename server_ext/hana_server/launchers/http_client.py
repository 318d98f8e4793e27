"""`RunnerClient`: the server's HTTP client for one runner process (httpx, async, keep-alive); the
process launcher's `RunnerConnection`.

Runner errors become hana errors: a 400 is the request's fault (`InvalidRequest`), everything else
- other statuses, an `{"error"}` line inside a stream, a dropped connection - is `RunnerFailed`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from hana_protocol.errors import InvalidRequest, RunnerFailed
from hana_protocol.lines import LineBuffer, LineTooLong
from hana_server.runner.settings import SECRET_HEADER  # light: argparse only, no llama_cpp

# A runner message is a token's text with its logprobs, or a final message with a context of at
# most num_ctx tokens; a runner that sends more than this on one line is broken.
MAX_LINE = 64 << 20


class RunnerClient:
    """Talks to `http://127.0.0.1:<port>` with the runner's secret on every request."""

    def __init__(self, port: int, secret: str, *, request_timeout: float = 30.0) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={SECRET_HEADER: secret},
            # Streams may legitimately be silent for a long time (a long prompt being read), so
            # reads in a completion have no timeout; plain calls do.
            timeout=httpx.Timeout(request_timeout, connect=5.0),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=None),
            trust_env=False,  # never send loopback traffic through a proxy from the environment
            # Plain HTTP to loopback: no TLS, so no CA bundle either (loading it blocked the
            # event loop for ~200 ms at each runner start).
            verify=False,
        )

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The runner's messages for one completion, the final `{"done": true, ...}` included.

        Stopping early (break, `aclose()`, task cancellation) closes the HTTP connection, and the
        runner drops the sequence at its next step.
        """
        try:
            async with self._http.stream(
                "POST", "/completion", json=payload, timeout=httpx.Timeout(None, connect=5.0)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_for(response)
                buffer = LineBuffer(MAX_LINE)
                # One runner write (a step's messages, or several steps' with --stream-interval)
                # arrives as one raw chunk: its messages are handled in one go, so the client
                # gets them in one flush (api/flushing.py).
                async for data in response.aiter_raw():
                    try:
                        lines = buffer.feed(data)
                    except LineTooLong as error:
                        raise RunnerFailed(f"the runner sent {error}") from None
                    for line in lines:
                        if not line:
                            continue
                        message = json.loads(line)
                        if "error" in message:
                            raise RunnerFailed(f"runner error: {message['error']}")
                        yield message
                        if message.get("done"):
                            return
                    # Chunks already buffered are read without a trip through the event loop,
                    # so a fast runner would keep this task running for a whole answer: give
                    # the other requests their turn (and the client its flush) between chunks.
                    await asyncio.sleep(0)
        except httpx.TransportError as error:
            raise RunnerFailed(f"lost the connection to the runner: {error!r}") from error
        raise RunnerFailed("the runner ended the stream without a final message")

    async def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        answer = await self._post(
            "/tokenize",
            {"content": text, "add_special": add_special, "parse_special": parse_special},
        )
        return list(answer["tokens"])

    async def detokenize(self, tokens: list[int]) -> str:
        return str((await self._post("/detokenize", {"tokens": tokens}))["content"])

    async def embed(self, texts: list[str], truncate: bool = True) -> dict[str, Any]:
        """`{"embeddings": [[float]], "prompt_eval_count": int}`, vectors L2-normalised."""
        return await self._post(
            "/embedding", {"content": texts, "truncate": truncate}, timeout=None
        )

    async def set_threads(self, threads: int) -> int:
        return int((await self._post("/threads", {"threads": threads}))["threads"])

    async def health(self, timeout: float | None = None) -> dict[str, Any]:
        return await self._request(
            "GET", "/health", None, httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(
        self, path: str, body: dict[str, Any], timeout: Any = httpx.USE_CLIENT_DEFAULT
    ) -> dict[str, Any]:
        return await self._request("POST", path, body, timeout)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: Any
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, json=body, timeout=timeout)
        except httpx.TransportError as error:
            raise RunnerFailed(f"lost the connection to the runner: {error!r}") from error
        if response.status_code != 200:
            raise _error_for(response)
        answer: dict[str, Any] = response.json()
        return answer


def _error_for(response: httpx.Response) -> Exception:
    try:
        message = str(response.json().get("error") or response.text)
    except ValueError:
        message = response.text or f"HTTP {response.status_code}"
    if response.status_code == 400:
        return InvalidRequest(message)
    return RunnerFailed(f"runner answered {response.status_code}: {message}")
