"""`HanaClient`: the Ollama API of a hana server from Python, async-first with sync twins.

Every operation is `async def async_x(...)`, and its blocking twin `x(...)` is generated from it
(`hana_client.sync.run_sync`), same parameters and docstring. Streaming operations are async
generators `async_stream_x` yielding Ollama's NDJSON chunks as dicts, with iterator twins
`stream_x`; `async_generate` / `async_chat` fold the same stream into an `Answer`. The server's own
state comes from `async_status()` (one snapshot) and `async_events()` (its state changes, live).

Errors are `hana_protocol.errors` types, the ones the server raised: `ModelNotFound` (404),
`InvalidRequest` (400), `ServerBusy` (503), ... and `ServerUnreachable`; all are `HanaError` with
`.status` and `.message`. Discovery: see `hana_client.discovery`.

Example::

    with HanaClient() as client:
        for chunk in client.stream_generate("gemma3:270m", "Why is the sky blue?"):
            print(chunk["response"], end="")
    async with HanaClient() as client:
        answer = await client.async_chat("gemma3:270m", [{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from traitlets import Bool, Float, Unicode, observe
from traitlets.config import LoggingConfigurable

from hana_client.answer import Answer
from hana_client.discovery import discover
from hana_client.loop import background_loop_if_started
from hana_client.payload import drop_none, generation_body
from hana_client.streams import ndjson, raise_for_status, sse
from hana_client.sync import run_sync
from hana_protocol.digests import blob_digest
from hana_protocol.env import auth_headers, client_api_key, env_value
from hana_protocol.errors import ServerUnreachable
from hana_protocol.modelfile import plan_create_from_file

BLOCK = 1 << 20


def _collect(stream: Callable[..., AsyncIterator[dict[str, Any]]], doc: str) -> Any:
    """An `async_x` that folds the chunks of `stream` into an `Answer`, with `stream`'s
    parameters (so the sync twin and `help()` show the real arguments, not `**kwargs`)."""

    async def collect(self: HanaClient, model: str, *args: Any, **kwargs: Any) -> Answer:
        answer = Answer(model=model)
        async with aclosing(stream(self, model, *args, **kwargs)) as chunks:
            async for chunk in chunks:
                answer.add(chunk)
        return answer

    collect.__doc__ = doc
    collect.__name__ = stream.__name__.replace("_stream", "")
    collect.__qualname__ = stream.__qualname__.replace("_stream", "")
    signature = inspect.signature(stream)
    collect.__signature__ = signature.replace(return_annotation="Answer")  # type: ignore[attr-defined]
    return collect


class HanaClient(LoggingConfigurable):
    """Ollama API client for a hana server: every `async_x` coroutine has a blocking twin `x`.

    Usable as `with HanaClient() as client:` and `async with HanaClient() as client:`, which
    close its connections on the way out.

    Parameters
    ----------
    url:
        Server URL; when unset the server is discovered (see `hana_client.discovery`).
    """

    url = Unicode(
        None,
        allow_none=True,
        help="Server URL (e.g. http://127.0.0.1:11434). Unset: HANA_URL, then the shared port "
        "(HANA_HOST / OLLAMA_HOST) if it answers, then a server started as a child process.",
    ).tag(config=True)
    token = Unicode(
        None,
        allow_none=True,
        help="Jupyter token sent as `Authorization: token ...` when the API sits behind a Jupyter "
        "server. Unset: the HANA_TOKEN environment variable, if any.",
    ).tag(config=True)
    api_key = Unicode(
        None,
        allow_none=True,
        help="API key of a shared port that requires one, sent as `Authorization: Bearer ...` "
        "(when no Jupyter `token` is in use). Unset: HANA_API_KEY, then OLLAMA_API_KEY.",
    ).tag(config=True)
    connect_timeout = Float(5.0, help="Seconds to wait for a TCP connection.").tag(config=True)
    request_timeout = Float(
        60.0,
        help="Seconds to wait for the answer of a non-streaming request (list, ps, show, ...). "
        "Streams (generate, chat, pull, create) wait as long as the server works on them.",
    ).tag(config=True)
    events_timeout = Float(
        45.0,
        help="Seconds `events()` waits for the next event or keep-alive comment (the server sends "
        "one every 15 s) before it calls the connection dead.",
    ).tag(config=True)
    probe_timeout = Float(
        0.5, help="Seconds the shared port gets to answer `GET /` during discovery."
    ).tag(config=True)
    start_embedded = Bool(
        True,
        help="Start a hana server as a child process when discovery finds none.",
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

    # ---- discovery and connections --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server URL in use, discovered (and an embedded server started) on first access."""
        with self._resolve_lock:
            if self._base_url is None:
                self._base_url = discover(
                    self.url,
                    probe_timeout=self.probe_timeout,
                    start_embedded=self.start_embedded,
                )
                self.log.debug("hana server: %s", self._base_url)
            return self._base_url

    async def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._http_lock:
            client = self._http_clients.get(loop)
        if client is not None:
            return client
        # Discovery may probe or start a server: off the loop. Requests started together all get
        # here; only the first creates the pool (below, with no await between check and insert).
        base_url = self._base_url or await asyncio.to_thread(lambda: self.base_url)
        headers = auth_headers(
            self.token or env_value("HANA_TOKEN"), self.api_key or client_api_key()
        )
        with self._http_lock:
            client = self._http_clients.get(loop)
            if client is None:
                client = httpx.AsyncClient(
                    base_url=base_url,
                    headers=headers,
                    timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
                )
                self._http_clients[loop] = client
        return client

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachable:
        url = self._base_url or self.url or "?"
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            reason = f"connection refused ({reason})"
        elif not isinstance(exc, httpx.TimeoutException):
            reason = f"connection lost ({reason})"
        return ServerUnreachable(url.rstrip("/"), reason)

    async def _request(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> Any:
        """One non-streaming request; returns the decoded JSON body (None when empty)."""
        client = await self._http()
        try:
            response = await client.request(method, path, json=payload)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        await raise_for_status(response)
        return response.json() if response.content.strip() else None

    async def _stream(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Send the request and yield each NDJSON line (SSE for `api/hana/events`); closing the
        iterator closes the connection, which tells the server to stop."""
        client = await self._http()
        events = path == "api/hana/events"
        read = self.events_timeout if events else None
        timeout = httpx.Timeout(read, connect=self.connect_timeout)
        try:
            reader = sse if events else ndjson
            async with (
                client.stream(method, path, json=payload, timeout=timeout) as response,
                aclosing(reader(response)) as items,
            ):
                async for item in items:
                    yield item
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # ---- the server -----------------------------------------------------------------------------

    async def async_version(self) -> str:
        """The server's version string (`GET /api/version`)."""
        return str((await self._request("GET", "api/version"))["version"])

    async def async_status(self) -> dict[str, Any]:
        """One snapshot of the server (`GET /api/hana/status`): version, url, runners (`models`),
        waiting requests, cpus, memory budget and settings. A plain Ollama server has no such
        route: `HanaError` with status 404."""
        result: dict[str, Any] = await self._request("GET", "api/hana/status")
        return result

    async def async_events(self) -> AsyncIterator[dict[str, Any]]:
        """The server's state changes as they happen (`GET /api/hana/events`, server-sent events).

        The first event is the current state (`{"event": "state", "models": [...], "waiting":
        [...]}`), each later one the state after a change (load progress, a request admitted or
        finished, an unload), or `crashed` / `load_failed`. It ends when the server closes the
        stream; `ServerUnreachable` when no event or keep-alive came for `events_timeout` s.
        """
        async with aclosing(self._stream("GET", "api/hana/events")) as events:
            async for event in events:
                yield event

    # ---- models ---------------------------------------------------------------------------------

    async def async_models(self) -> list[dict[str, Any]]:
        """Installed models, newest first (`GET /api/tags`)."""
        return list((await self._request("GET", "api/tags"))["models"])

    async def async_ps(self) -> list[dict[str, Any]]:
        """Loaded models with their expiry (`GET /api/ps`)."""
        return list((await self._request("GET", "api/ps"))["models"])

    async def async_show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        """Details, parameters, template and capabilities of `model` (`POST /api/show`)."""
        result: dict[str, Any] = await self._request(
            "POST", "api/show", {"model": model, "verbose": verbose}
        )
        return result

    async def async_delete(self, model: str) -> None:
        """Remove `model` from the store (`DELETE /api/delete`)."""
        await self._request("DELETE", "api/delete", {"model": model})

    async def async_copy(self, source: str, destination: str) -> None:
        """Copy a model under a new name (`POST /api/copy`)."""
        await self._request("POST", "api/copy", {"source": source, "destination": destination})

    # ---- generation -----------------------------------------------------------------------------

    async def async_stream_generate(
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
        suffix: str | None = None,
        context: list[int] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/generate` chunks. An empty prompt only loads the model.

        `context` continues an earlier answer (its `Answer.context`); `logprobs` asks for each
        token's log probability and `top_logprobs` (0-20) for that many alternatives."""
        body = generation_body(
            model,
            prompt=prompt,
            system=system,
            options=options,
            format=format,
            keep_alive=keep_alive,
            raw=raw,
            images=images,
            think=think,
            suffix=suffix,
            context=context,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        async with aclosing(self._stream("POST", "api/generate", body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async_generate = _collect(
        async_stream_generate,
        "Generate a completion (arguments of `async_stream_generate`) and return it whole.",
    )

    async def async_stream_chat(
        self,
        model: str,
        messages: list[Mapping[str, Any]],
        *,
        tools: list[Mapping[str, Any]] | None = None,
        options: Mapping[str, Any] | None = None,
        format: str | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        think: bool | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/chat` chunks for a conversation (`[{"role", "content"}, ...]`)."""
        body = generation_body(
            model,
            messages=[dict(message) for message in messages],
            tools=tools,
            options=options,
            format=format,
            keep_alive=keep_alive,
            think=think,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        async with aclosing(self._stream("POST", "api/chat", body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async_chat = _collect(
        async_stream_chat,
        "Answer a conversation (arguments of `async_stream_chat`); `.message` is the reply.",
    )

    async def async_embed(
        self, model: str, input: str | list[str], *, truncate: bool | None = None
    ) -> list[list[float]]:
        """Embedding vectors for one text or a list of texts (`POST /api/embed`)."""
        result = await self._request(
            "POST", "api/embed", drop_none({"model": model, "input": input, "truncate": truncate})
        )
        return list(result["embeddings"])

    # ---- the store ------------------------------------------------------------------------------

    async def async_stream_pull(
        self, model: str, *, insecure: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream pull progress (`{"status", "digest"?, "total"?, "completed"?}`) until success."""
        body = {"model": model, "insecure": insecure, "stream": True}
        async with aclosing(self._stream("POST", "api/pull", body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def async_push_blob(self, path: str | Path) -> str:
        """Upload a file as a blob unless the server has it; return its `sha256:<hex>` digest."""
        digest, _uploaded = await self._push_blob(Path(path))
        return digest

    async def _push_blob(self, path: Path) -> tuple[str, bool]:
        digest = await asyncio.to_thread(blob_digest, path)  # hundreds of MB: off the loop
        client = await self._http()
        try:
            head = await client.head(f"api/blobs/{digest}")
            if head.status_code == 200:
                return digest, False
            with path.open("rb") as body:
                response = await client.post(
                    f"api/blobs/{digest}",
                    content=_file_blocks(body),
                    timeout=httpx.Timeout(None, connect=self.connect_timeout),
                )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        await raise_for_status(response)
        return digest, True

    async def async_stream_create(self, model: str, **fields: Any) -> AsyncIterator[dict[str, Any]]:
        """Stream `POST /api/create` statuses.

        `fields` are Ollama's: `from_` (for `from`), `files` (`{filename: digest}`), `template`,
        `system`, `parameters`, `messages`, `license`, `quantize`.
        """
        if "from_" in fields:
            fields["from"] = fields.pop("from_")
        body = drop_none({"model": model, **fields, "stream": True})
        async with aclosing(self._stream("POST", "api/create", body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def async_stream_create_from_modelfile(
        self, model: str, modelfile: str | Path
    ) -> AsyncIterator[dict[str, Any]]:
        """Create `model` from a Modelfile on this machine, like `ollama create -f`; stream the
        statuses.

        The Modelfile is read by `hana_protocol.modelfile.plan_create_from_file`, the one
        translation the server also uses: a `FROM` naming a .gguf file, or a directory holding
        one (relative to the Modelfile's folder), is uploaded as a blob unless the server has it
        (a `copying file <digest> 100%` status says it was); any other `FROM` names a model.
        """
        plan = await asyncio.to_thread(plan_create_from_file, Path(modelfile))
        digest = None
        if plan.model_file is not None:
            digest, uploaded = await self._push_blob(plan.model_file)
            if uploaded:
                yield {"status": f"copying file {digest} 100%"}
        body = {**plan.body(model, digest), "stream": True}
        async with aclosing(self._stream("POST", "api/create", body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def async_create_from_modelfile(
        self, model: str, modelfile: str | Path
    ) -> dict[str, Any]:
        """Create `model` from a Modelfile (see `async_stream_create_from_modelfile`); return the
        last status (`{"status": "success"}`)."""
        last: dict[str, Any] = {}
        async with aclosing(self.async_stream_create_from_modelfile(model, modelfile)) as chunks:
            async for chunk in chunks:
                last = chunk
        return last

    # ---- lifetime -------------------------------------------------------------------------------

    async def async_close(self) -> None:
        """Close the connection pool of the running loop."""
        with self._http_lock:
            client = self._http_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close the pool of the background loop (pools of other loops go with their loop)."""
        loop = background_loop_if_started()
        if loop is not None and not loop.in_loop_thread():
            loop.run(self.async_close())

    def __enter__(self) -> HanaClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> HanaClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.async_close()

    # ---- sync twins: generated, same parameters and docstrings ----------------------------------

    version = run_sync(async_version)
    status = run_sync(async_status)
    events = run_sync(async_events)
    models = run_sync(async_models)
    ps = run_sync(async_ps)
    show = run_sync(async_show)
    delete = run_sync(async_delete)
    copy = run_sync(async_copy)
    stream_generate = run_sync(async_stream_generate)
    generate = run_sync(async_generate)
    stream_chat = run_sync(async_stream_chat)
    chat = run_sync(async_chat)
    embed = run_sync(async_embed)
    stream_pull = run_sync(async_stream_pull)
    push_blob = run_sync(async_push_blob)
    stream_create = run_sync(async_stream_create)
    stream_create_from_modelfile = run_sync(async_stream_create_from_modelfile)
    create_from_modelfile = run_sync(async_create_from_modelfile)


async def _file_blocks(body: Any) -> AsyncIterator[bytes]:
    # Blobs are model files of hundreds of MB: stream them instead of reading them into memory.
    for block in iter(lambda: body.read(BLOCK), b""):
        yield block
