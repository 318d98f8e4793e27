"""`HanaClient`: the Ollama API of a hana server from Python, async-first with sync twins.

Every operation is `async def async_x(...)` with a sync twin `x(...)` (the nbclient shape).
Streaming operations yield Ollama's NDJSON chunks as dicts (`async_stream_generate` /
`stream_generate`); the non-streaming ones aggregate the same stream into a `Completion`.

Sync twins run their coroutine on one `BackgroundLoop` (an event loop in a daemon thread), never on
the caller's loop: a notebook cell already runs inside ipykernel's loop, where `asyncio.run` is
refused. A KeyboardInterrupt while a sync twin waits cancels the coroutine, which closes the HTTP
stream, so the server stops generating.

Which server: explicit `url` > `HANA_URL` > the shared Ollama port (`OLLAMA_HOST` or
http://127.0.0.1:11434) if `GET /` answers quickly > an `EmbeddedServer` started in this process.

Example::

    client = HanaClient()
    for chunk in client.stream_generate("gemma3:270m", "Why is the sky blue?"):
        print(chunk["response"], end="")
    answer = await client.async_chat("gemma3:270m", [{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import os
import re
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
from traitlets import Bool, Float, Unicode, observe
from traitlets.config import LoggingConfigurable

if TYPE_CHECKING:
    from hana_server.serve import EmbeddedServer

T = TypeVar("T")

DEFAULT_SHARED_URL = "http://127.0.0.1:11434"


# --------------------------------------------------------------------------------------------------
# errors


class HanaClientError(Exception):
    """Base of every error raised by `HanaClient`; `str(error)` is a message fit for users."""


class ServerUnreachable(HanaClientError):
    """No hana (or Ollama) server answers at the URL, or the connection broke mid-request."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the hana server at {url}: {reason}")
        self.url = url
        self.reason = reason


class RequestError(HanaClientError):
    """The server refused or failed a request; carries the HTTP status and Ollama's message.

    An error reported inside an already started stream keeps the stream's status (200).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelNotFoundError(RequestError):
    """The server has no model of that name (HTTP 404, `model '<name>' not found`)."""


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class Completion:
    """The result of a generate or chat request: the text plus Ollama's final metrics.

    Built chunk by chunk with `add`, so a streamed answer and a collected one are the same object.
    Durations are in nanoseconds, as Ollama reports them.
    """

    model: str
    text: str = ""
    thinking: str = ""
    done: bool = False
    done_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    final: dict[str, Any] = field(default_factory=dict, repr=False)

    def add(self, chunk: Mapping[str, Any]) -> str:
        """Fold one generate or chat chunk in; return the text it added."""
        message = chunk.get("message")
        if isinstance(message, Mapping):
            delta = str(message.get("content") or "")
            self.thinking += str(message.get("thinking") or "")
            self.tool_calls.extend(message.get("tool_calls") or [])
        else:
            delta = str(chunk.get("response") or "")
            self.thinking += str(chunk.get("thinking") or "")
        self.text += delta
        if chunk.get("done"):
            self.done = True
            self.done_reason = chunk.get("done_reason")
            self.final = dict(chunk)
            for name in (
                "prompt_eval_count",
                "prompt_eval_duration",
                "eval_count",
                "eval_duration",
                "load_duration",
                "total_duration",
            ):
                setattr(self, name, int(chunk.get(name) or 0))
        return delta

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed from `eval_count / eval_duration`, or None before the end."""
        if self.eval_count <= 0 or self.eval_duration <= 0:
            return None
        return self.eval_count / (self.eval_duration / 1e9)

    @property
    def message(self) -> dict[str, Any]:
        """The answer as a chat message, ready to append to a conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        return message

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------------
# the background loop behind every sync twin


class BackgroundTask:
    """A coroutine running on a `BackgroundLoop`, seen from another thread.

    Unlike `concurrent.futures.Future.cancel`, `cancel(wait=...)` waits until the coroutine has
    really unwound (its HTTP streams closed), which an interrupted cell needs before it returns.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop = loop
        self._done = threading.Event()
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(lambda _task: self._done.set())
        if self._cancel_requested:
            self._task.cancel()

    def _cancel_on_loop(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()

    def done(self) -> bool:
        """True once the coroutine has finished, failed or been cancelled."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or `timeout` seconds passed; True if done. Interruptible by SIGINT."""
        return self._done.wait(timeout)

    def result(self) -> Any:
        """Block until done and return the coroutine's result or raise its exception.

        A KeyboardInterrupt while waiting cancels the coroutine (closing its connections) and is
        re-raised.
        """
        try:
            self._done.wait()
        except KeyboardInterrupt:
            self.cancel(wait=5.0)
            raise
        assert self._task is not None
        return self._task.result()

    def cancel(self, wait: float = 0.0) -> bool:
        """Cancel the coroutine; wait up to `wait` seconds for it to unwind. True if it has."""
        if not self._done.is_set():
            self._loop.call_soon_threadsafe(self._cancel_on_loop)
        return self._done.wait(wait) if wait > 0 else self._done.is_set()


class BackgroundLoop:
    """An asyncio loop in a daemon thread, shared by every client in the process.

    Sync twins and `%%hana` streams run here, so they work the same inside ipykernel (whose own loop
    is busy running the cell) and in plain Python.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="hana-client-loop", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> BackgroundTask:
        """Start `coro` on the loop and return a handle to wait for or cancel it."""
        return BackgroundTask(self.loop, coro)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and block for its result (see `BackgroundTask.result`)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a sync HanaClient method was called on hana's own loop; await async_x"
            )
        result: T = self.submit(coro).result()
        return result


class _Once(Generic[T]):
    """A process-wide object made on first use, by whichever thread asks first."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self.value is None:
                self.value = self._make()
            return self.value


_background_loop = _Once(BackgroundLoop)


def background_loop() -> BackgroundLoop:
    """The process-wide `BackgroundLoop`, started on first use."""
    return _background_loop.get()


# --------------------------------------------------------------------------------------------------
# server discovery


def normalize_url(url: str) -> str:
    """Turn `host`, `host:port`, `:port` or a full URL into `scheme://host:port[/prefix]/`.

    Reads it the way Ollama reads `OLLAMA_HOST`: without a scheme the port defaults to 11434, with
    one to 80/443; a wildcard bind address (0.0.0.0, ::) means this machine.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest, default_port = "http", text, "11434"
    else:
        default_port = "443" if scheme == "https" else "80"
    host_port, _, path = rest.partition("/")
    match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", host_port)
    host, port = (match.group(1), match.group(2)) if match else (host_port, None)
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    prefix = f"/{path.strip('/')}/" if path.strip("/") else "/"
    return f"{scheme}://{host}:{port or default_port}{prefix}"


def shared_url() -> str:
    """The shared localhost port: `OLLAMA_HOST` if set, else http://127.0.0.1:11434."""
    return normalize_url(os.environ.get("OLLAMA_HOST") or DEFAULT_SHARED_URL)


def probe(url: str, timeout: float) -> bool:
    """True if `GET /` on `url` answers 200 within `timeout` seconds."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _start_embedded() -> EmbeddedServer:
    # Imported here: the server side is heavy and most kernels talk to a running server.
    from hana_server.serve import EmbeddedServer

    server = EmbeddedServer.start()
    atexit.register(server.stop)
    return server


_embedded = _Once(_start_embedded)


def embedded_server() -> EmbeddedServer:
    """The hana server running inside this process, started on first use and stopped at exit."""
    return _embedded.get()


def keep_alive_value(value: str | float | None) -> str | float | None:
    """Ollama reads a JSON number as seconds and a string as a Go duration ("5m", "-1m").

    Users type `--keep-alive -1` or `300` expecting Ollama's CLI meaning, and `"-1"` is not a valid
    Go duration, so plain numbers are sent as numbers.
    """
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
        number = float(value)
        return int(number) if number.is_integer() else number
    return value


def _drop_none(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if value is not None}


# --------------------------------------------------------------------------------------------------
# the client


class HanaClient(LoggingConfigurable):
    """Ollama API client for a hana server: every `async_x` coroutine has a blocking twin `x`.

    Parameters
    ----------
    url:
        Server URL; when unset the server is discovered (see the module docstring).
    """

    url = Unicode(
        None,
        allow_none=True,
        help="Server URL (e.g. http://127.0.0.1:11434). Unset: HANA_URL, then the shared Ollama "
        "port if it answers, then a server embedded in this process.",
    ).tag(config=True)
    token = Unicode(
        None,
        allow_none=True,
        help="Jupyter token sent as `Authorization: token ...` when the API sits behind a Jupyter "
        "server. Unset: the HANA_TOKEN environment variable, if any.",
    ).tag(config=True)
    connect_timeout = Float(5.0, help="Seconds to wait for a TCP connection.").tag(config=True)
    request_timeout = Float(
        60.0,
        help="Seconds to wait for the answer of a non-streaming request (list, ps, show, ...). "
        "Streams (generate, chat, pull, create) wait as long as the server works on them.",
    ).tag(config=True)
    probe_timeout = Float(
        0.5, help="Seconds the shared Ollama port gets to answer `GET /` during discovery."
    ).tag(config=True)
    start_embedded = Bool(
        True,
        help="Start a hana server inside this process when discovery finds none.",
    ).tag(config=True)

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        if url is not None:  # an explicit None must not hide `c.HanaClient.url` from config
            kwargs["url"] = url
        super().__init__(**kwargs)
        self._base_url: str | None = None
        self._resolve_lock = threading.Lock()
        # httpx's async pool belongs to the loop that opened it, and a client is used both from the
        # background loop (sync twins) and from the caller's loop (`await client.async_x()`).
        self._http_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()
        self._http_lock = threading.Lock()

    @observe("url")
    def _url_changed(self, change: Mapping[str, Any]) -> None:
        # Traits are set before __init__ ends; the caches may not exist yet.
        if hasattr(self, "_resolve_lock"):
            with self._resolve_lock:
                self._base_url = None
            with self._http_lock:
                self._http_clients.clear()

    # ---- discovery ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server URL in use, discovered (and an embedded server started) on first access."""
        with self._resolve_lock:
            if self._base_url is None:
                self._base_url = self._discover()
                self.log.debug("hana server: %s", self._base_url)
            return self._base_url

    def _discover(self) -> str:
        if self.url:
            return normalize_url(self.url)
        if os.environ.get("HANA_URL"):
            return normalize_url(os.environ["HANA_URL"])
        shared = shared_url()
        if probe(shared, self.probe_timeout):
            return shared
        if not self.start_embedded:
            raise ServerUnreachable(shared, "no server answers and start_embedded is off")
        return normalize_url(embedded_server().url)

    async def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._http_lock:
            client = self._http_clients.get(loop)
        if client is not None:
            return client
        # Discovery may probe or start a server: off the loop. Requests started together all get
        # here; only the first creates the pool (below, with no await between check and insert).
        base_url = self._base_url or await asyncio.to_thread(lambda: self.base_url)
        token = self.token or os.environ.get("HANA_TOKEN")
        with self._http_lock:
            client = self._http_clients.get(loop)
            if client is None:
                client = httpx.AsyncClient(
                    base_url=base_url,
                    headers={"Authorization": f"token {token}"} if token else None,
                    timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
                )
                self._http_clients[loop] = client
        return client

    # ---- plumbing -------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachable:
        url = self._base_url or self.url or "?"
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            reason = f"connection refused ({reason})"
        elif not isinstance(exc, httpx.TimeoutException):
            reason = f"connection lost ({reason})"
        return ServerUnreachable(url.rstrip("/"), reason)

    @staticmethod
    def _error(status: int, body: str) -> RequestError:
        try:
            message = str(json.loads(body).get("error") or body)
        except (ValueError, AttributeError):
            message = body.strip() or f"HTTP {status}"
        return (ModelNotFoundError if status == 404 else RequestError)(status, message)

    async def _request(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> Any:
        """One non-streaming request; returns the decoded JSON body (None when empty)."""
        client = await self._http()
        try:
            response = await client.request(method, path, json=payload)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._error(response.status_code, response.text)
        return response.json() if response.content.strip() else None

    async def _stream(self, path: str, payload: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST `payload` and yield each NDJSON line; closing the iterator closes the connection."""
        client = await self._http()
        timeout = httpx.Timeout(None, connect=self.connect_timeout)
        try:
            async with client.stream("POST", path, json=payload, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._error(response.status_code, response.text)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    chunk = json.loads(line)
                    if "error" in chunk:
                        raise self._error(response.status_code, line)
                    yield chunk
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return background_loop().run(wrapper())

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator on the background loop, one item per `next()`."""
        loop = background_loop()
        try:
            while True:
                try:
                    yield loop.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                loop.run(aclose())

    # ---- models ---------------------------------------------------------------------------------

    async def async_version(self) -> str:
        """The server's version string (`GET /api/version`)."""
        return str((await self._request("GET", "api/version"))["version"])

    def version(self) -> str:
        """Sync twin of `async_version`."""
        return self._run(self.async_version())

    async def async_models(self) -> list[dict[str, Any]]:
        """Installed models, newest first (`GET /api/tags`)."""
        return list((await self._request("GET", "api/tags"))["models"])

    def models(self) -> list[dict[str, Any]]:
        """Sync twin of `async_models`."""
        return self._run(self.async_models())

    async def async_ps(self) -> list[dict[str, Any]]:
        """Loaded models with their expiry (`GET /api/ps`)."""
        return list((await self._request("GET", "api/ps"))["models"])

    def ps(self) -> list[dict[str, Any]]:
        """Sync twin of `async_ps`."""
        return self._run(self.async_ps())

    async def async_show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        """Details, parameters, template and capabilities of `model` (`POST /api/show`)."""
        result: dict[str, Any] = await self._request(
            "POST", "api/show", {"model": model, "verbose": verbose}
        )
        return result

    def show(self, model: str, **kwargs: Any) -> dict[str, Any]:
        """Sync twin of `async_show`."""
        return self._run(self.async_show(model, **kwargs))

    async def async_delete(self, model: str) -> None:
        """Remove `model` from the store (`DELETE /api/delete`)."""
        await self._request("DELETE", "api/delete", {"model": model})

    def delete(self, model: str) -> None:
        """Sync twin of `async_delete`."""
        self._run(self.async_delete(model))

    async def async_copy(self, source: str, destination: str) -> None:
        """Copy a model under a new name (`POST /api/copy`)."""
        await self._request("POST", "api/copy", {"source": source, "destination": destination})

    def copy(self, source: str, destination: str) -> None:
        """Sync twin of `async_copy`."""
        self._run(self.async_copy(source, destination))

    # ---- generation -----------------------------------------------------------------------------

    @staticmethod
    def _generation_payload(model: str, **fields: Any) -> dict[str, Any]:
        options = fields.pop("options", None)
        payload = _drop_none({"model": model, **fields, "stream": True})
        if options:
            payload["options"] = _drop_none(options)
        if "keep_alive" in payload:
            payload["keep_alive"] = keep_alive_value(payload["keep_alive"])
        return payload

    def async_stream_generate(
        self,
        model: str,
        prompt: str = "",
        *,
        system: str | None = None,
        options: Mapping[str, Any] | None = None,
        format: str | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        raw: bool | None = None,
        images: list[str] | None = None,
        think: bool | str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/generate` chunks. An empty prompt only loads the model."""
        payload = self._generation_payload(
            model,
            prompt=prompt,
            system=system,
            options=options,
            format=format,
            keep_alive=keep_alive,
            raw=raw,
            images=images,
            think=think,
        )
        return self._stream("api/generate", payload)

    def stream_generate(
        self, model: str, prompt: str = "", **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Sync twin of `async_stream_generate` (same arguments)."""
        return self._iterate(self.async_stream_generate(model, prompt, **kwargs))

    async def async_generate(self, model: str, prompt: str = "", **kwargs: Any) -> Completion:
        """Generate a completion (arguments of `async_stream_generate`) and return it whole."""
        return await self._collect(model, self.async_stream_generate(model, prompt, **kwargs))

    def generate(self, model: str, prompt: str = "", **kwargs: Any) -> Completion:
        """Sync twin of `async_generate`."""
        return self._run(self.async_generate(model, prompt, **kwargs))

    def async_stream_chat(
        self,
        model: str,
        messages: list[Mapping[str, Any]],
        *,
        tools: list[Mapping[str, Any]] | None = None,
        options: Mapping[str, Any] | None = None,
        format: str | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        think: bool | str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/chat` chunks for a conversation (`[{"role", "content"}, ...]`)."""
        payload = self._generation_payload(
            model,
            messages=[dict(message) for message in messages],
            tools=tools,
            options=options,
            format=format,
            keep_alive=keep_alive,
            think=think,
        )
        return self._stream("api/chat", payload)

    def stream_chat(
        self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Sync twin of `async_stream_chat` (same arguments)."""
        return self._iterate(self.async_stream_chat(model, messages, **kwargs))

    async def async_chat(
        self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any
    ) -> Completion:
        """Answer a conversation (arguments of `async_stream_chat`); `.message` is the reply."""
        return await self._collect(model, self.async_stream_chat(model, messages, **kwargs))

    def chat(self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any) -> Completion:
        """Sync twin of `async_chat`."""
        return self._run(self.async_chat(model, messages, **kwargs))

    @staticmethod
    async def _collect(model: str, chunks: AsyncIterator[dict[str, Any]]) -> Completion:
        completion = Completion(model=model)
        async for chunk in chunks:
            completion.add(chunk)
        return completion

    async def async_embed(
        self, model: str, input: str | list[str], *, truncate: bool | None = None
    ) -> list[list[float]]:
        """Embedding vectors for one text or a list of texts (`POST /api/embed`)."""
        result = await self._request(
            "POST", "api/embed", _drop_none({"model": model, "input": input, "truncate": truncate})
        )
        return list(result["embeddings"])

    def embed(self, model: str, input: str | list[str], **kwargs: Any) -> list[list[float]]:
        """Sync twin of `async_embed`."""
        return self._run(self.async_embed(model, input, **kwargs))

    # ---- store ----------------------------------------------------------------------------------

    def async_stream_pull(
        self, model: str, *, insecure: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream pull progress (`{"status", "digest"?, "total"?, "completed"?}`) until success."""
        return self._stream("api/pull", {"model": model, "insecure": insecure, "stream": True})

    def stream_pull(self, model: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Sync twin of `async_stream_pull`."""
        return self._iterate(self.async_stream_pull(model, **kwargs))

    async def async_push_blob(self, path: str | Path) -> str:
        """Upload a file as a blob unless the server has it; return its `sha256:<hex>` digest."""
        data_path = Path(path)
        digest = "sha256:" + await asyncio.to_thread(_sha256_file, data_path)
        client = await self._http()
        try:
            head = await client.head(f"api/blobs/{digest}")
            if head.status_code == 200:
                return digest
            with data_path.open("rb") as body:
                response = await client.post(
                    f"api/blobs/{digest}",
                    content=_file_chunks(body),
                    timeout=httpx.Timeout(None, connect=self.connect_timeout),
                )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._error(response.status_code, response.text)
        return digest

    def push_blob(self, path: str | Path) -> str:
        """Sync twin of `async_push_blob`."""
        return self._run(self.async_push_blob(path))

    def async_stream_create(self, model: str, **fields: Any) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/create` statuses.

        `fields` are Ollama's: `from_` (for `from`), `files` (`{filename: digest}`), `template`,
        `system`, `parameters`, `messages`, `license`, `quantize`.
        """
        if "from_" in fields:
            fields["from"] = fields.pop("from_")
        return self._stream("api/create", _drop_none({"model": model, **fields, "stream": True}))

    def stream_create(self, model: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Sync twin of `async_stream_create`."""
        return self._iterate(self.async_stream_create(model, **fields))

    # ---- lifetime -------------------------------------------------------------------------------

    async def async_close(self) -> None:
        """Close the connection pool of the running loop."""
        with self._http_lock:
            client = self._http_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close the pool of the background loop (pools of other loops go with their loop)."""
        if _background_loop.value is not None:
            _background_loop.value.run(self.async_close())


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def _file_chunks(body: Any) -> AsyncIterator[bytes]:
    # Blobs are model files of hundreds of MB: stream them instead of reading them into memory.
    for block in iter(lambda: body.read(1 << 20), b""):
        yield block


__all__ = [
    "BackgroundLoop",
    "BackgroundTask",
    "Completion",
    "HanaClient",
    "HanaClientError",
    "ModelNotFoundError",
    "RequestError",
    "ServerUnreachable",
    "background_loop",
    "normalize_url",
    "shared_url",
]
