"""`RemoteProxy`: generate, chat and embed for remote models, through one gate per upstream.

Everything that can be refused (the allow-list, a bad format, a full queue, an upstream that is
down or answers 401/404/5xx) is refused before the first byte goes out, with a status; the
answer's chunks are the upstream's, stamped with the local name plus `remote_model` and
`remote_host` as Ollama stamps them. A `RemoteAnswer` owns its gate slot and its upstream
connection: closing it (a client that left) closes the connection, which cancels the upstream's
work, and gives the slot back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hana_protocol.durations import FOREVER
from hana_protocol.errors import HanaError
from hana_server.generation import (
    AnswerStream,
    Chunk,
    TextFields,
    answer_chunk,
    chat_fields,
    generate_fields,
    now_rfc3339,
)
from hana_server.remote import ollama_upstream, openai_upstream
from hana_server.remote.gate import Slot, UpstreamGate
from hana_server.remote.spec import RemoteSpec, allowed_hosts, remote_spec
from hana_server.remote.transport import Exchange, Limits, make_client
from hana_server.requests import ChatRequest, GenerateRequest
from hana_server.snapshots import RunnerSnapshot
from hana_server.store.model import Model


@dataclasses.dataclass
class RemoteAnswer(AnswerStream):
    """An answer from an upstream; used exactly like a local AnswerStream (`async with`, then
    `chunks()` once). `lease` is the gate's Slot."""

    spec: RemoteSpec | None = None
    exchange: Exchange | None = None
    source: AsyncIterator[Chunk] | None = None

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.exchange is not None:
                await self.exchange.aclose()
        finally:
            self.lease.release()

    async def chunks(self) -> AsyncIterator[Chunk]:
        assert self.spec is not None and self.source is not None and self.exchange is not None
        name = self.model.name.display
        stamp = {"model": name, "remote_model": self.spec.model, "remote_host": self.spec.host}
        try:
            async for chunk in self.source:
                out = {**stamp, "created_at": chunk.get("created_at") or now_rfc3339()}
                out.update((k, v) for k, v in chunk.items() if k not in out)
                if out.get("done"):
                    self.lease.record_speed(out.get("eval_count", 0), out.get("eval_duration", 0))
                    self.count_tokens(
                        name, out.get("prompt_eval_count", 0), out.get("eval_count", 0)
                    )
                yield out
        finally:
            try:
                await self.exchange.aclose()  # a client that left: the upstream stops too
            finally:
                self.lease.release()


@dataclasses.dataclass
class _Seen:
    model: Model
    spec: RemoteSpec
    last_used: float  # time.time()


class RemoteProxy:
    """The remote half of the generation service, and what `/api/ps` shows of it."""

    def __init__(
        self,
        *,
        remotes: str | None,
        parallel: int,
        max_queue: int,
        keep_alive: float,
        limits: Limits,
        changed: Callable[[], None],
        count_tokens: Callable[[str, int, int], None],
    ) -> None:
        self.allowed = allowed_hosts(remotes)
        self.parallel = parallel
        self.max_queue = max_queue
        self.keep_alive = keep_alive
        self.limits = limits
        self.changed = changed
        self.count_tokens = count_tokens
        self.gates: dict[str, UpstreamGate] = {}
        self.seen: dict[str, _Seen] = {}
        self._http = make_client(limits)

    @staticmethod
    def handles(model: Model) -> bool:
        return remote_spec(model.config) is not None

    def _spec(self, model: Model) -> RemoteSpec:
        spec = remote_spec(model.config)
        assert spec is not None
        spec.check_allowed(self.allowed)  # Ollama: 400 "this server cannot run this remote model"
        return spec

    def gate(self, spec: RemoteSpec) -> UpstreamGate:
        if spec.host not in self.gates:
            self.gates[spec.host] = UpstreamGate(
                spec.host, self.parallel, self.max_queue, self.changed
            )
        return self.gates[spec.host]

    async def _slot(self, model: Model, spec: RemoteSpec) -> Slot:
        name = model.name.display
        self.seen[name] = _Seen(model, spec, time.time())
        slot = await self.gate(spec).acquire(name)
        self.seen[name].last_used = time.time()
        return slot

    async def _open(
        self,
        model: Model,
        spec: RemoteSpec,
        path: str,
        body: dict[str, Any],
        translate: Callable[[Exchange], AsyncIterator[Chunk]],
        started: float,
        wrap: TextFields,
    ) -> RemoteAnswer:
        slot = await self._slot(model, spec)
        exchange = Exchange(self._http, spec, self.limits, path, body)
        try:
            await exchange.open()
        except BaseException:
            slot.release()
            raise
        return RemoteAnswer(
            model=model,
            lease=slot,  # type: ignore[arg-type]  # a Slot quacks like a Lease here
            payload=body,
            started=started,
            wrap=wrap,
            count_tokens=self.count_tokens,
            spec=spec,
            exchange=exchange,
            source=translate(exchange),
        )

    def _loaded(
        self, model: Model, spec: RemoteSpec, keep_alive: object, wrap: TextFields
    ) -> Chunk:
        """Empty prompt: nothing to load or unload here; answered at once, as Ollama does for
        chat (the upstream manages its own models)."""
        reason = "unload" if keep_alive in (0, "0", "0s") else "load"
        chunk = answer_chunk(model.name.display, wrap(""), done=True, done_reason=reason)
        return {"remote_model": spec.model, "remote_host": spec.host, **chunk}

    async def start_generate(
        self, model: Model, req: GenerateRequest, started: float
    ) -> RemoteAnswer | Chunk:
        spec = self._spec(model)
        if req.prompt == "" and not req.suffix:
            return self._loaded(model, spec, req.keep_alive, generate_fields)
        stream = req.stream is not False
        if spec.api == "openai":
            path, body = openai_upstream.generate_body(model, spec.model, req)
            return await self._open(
                model,
                spec,
                path,
                body,
                lambda ex: openai_upstream.translate(ex, False, stream, started),
                started,
                generate_fields,
            )
        body = ollama_upstream.generate_body(model, spec.model, req)
        return await self._open(
            model,
            spec,
            "/api/generate",
            body,
            lambda ex: ollama_upstream.relay(ex, stream),
            started,
            generate_fields,
        )

    async def start_chat(
        self, model: Model, req: ChatRequest, started: float
    ) -> RemoteAnswer | Chunk:
        spec = self._spec(model)
        if not req.messages:
            return self._loaded(model, spec, req.keep_alive, chat_fields)
        stream = req.stream is not False
        if spec.api == "openai":
            body = openai_upstream.chat_body(model, spec.model, req)
            return await self._open(
                model,
                spec,
                "/chat/completions",
                body,
                lambda ex: openai_upstream.translate(ex, True, stream, started),
                started,
                chat_fields,
            )
        body = ollama_upstream.chat_body(model, spec.model, req)
        return await self._open(
            model,
            spec,
            "/api/chat",
            body,
            lambda ex: ollama_upstream.relay(ex, stream),
            started,
            chat_fields,
        )

    async def embed(
        self,
        model: Model,
        inputs: list[str],
        *,
        truncate: bool,
        options: dict[str, Any] | None,
        keep_alive: object,
        dimensions: int | None,
    ) -> dict[str, Any]:
        """Embeddings from the upstream (`/api/embed` or `/embeddings`), in Ollama's shape."""
        started = time.monotonic()
        spec = self._spec(model)
        if spec.api == "openai":
            path, body = "/embeddings", openai_upstream.embed_body(spec.model, inputs, dimensions)
        else:
            path = "/api/embed"
            body = ollama_upstream.embed_body(
                model, spec.model, inputs, truncate, options, keep_alive, dimensions
            )
        slot = await self._slot(model, spec)
        exchange = Exchange(self._http, spec, self.limits, path, body)
        try:
            await exchange.open()
            data = await exchange.json()
        finally:
            await exchange.aclose()
            slot.release()
        if spec.api == "openai":
            vectors, prompt_tokens = openai_upstream.embed_result(data)
        else:
            if not isinstance(data, dict) or not isinstance(data.get("embeddings"), list):
                raise HanaError(f"remote host {spec.host} sent an invalid embed answer", 502)
            vectors, prompt_tokens = data["embeddings"], int(data.get("prompt_eval_count") or 0)
        self.count_tokens(model.name.display, prompt_tokens, 0)
        return {
            "model": model.name.display,
            "remote_model": spec.model,
            "remote_host": spec.host,
            "embeddings": vectors,
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
        }

    # ------------------------------------------------------------------ state

    def snapshots(self) -> list[RunnerSnapshot]:
        """Remote models in use (in flight or queued) or used within the keep-alive, as
        `/api/ps` entries with state "remote"; no process, no memory."""
        now = time.time()
        found = []
        for name, seen in list(self.seen.items()):
            gate = self.gates.get(seen.spec.host)
            active = gate.active.get(name, 0) if gate else 0
            queued = gate.queued(name) if gate else 0
            forever = self.keep_alive < 0 or self.keep_alive == FOREVER
            expires = seen.last_used + (0 if forever else self.keep_alive)
            if not (active or queued or forever or now < expires):
                continue
            found.append(
                RunnerSnapshot(
                    model=seen.model,
                    phase="remote",
                    active_requests=active,
                    queued=queued,
                    num_parallel=gate.limit if gate else self.parallel,
                    context_length=int(seen.model.config.get("context_length") or 0),
                    size=0,
                    expires_at=datetime.fromtimestamp(expires, UTC)
                    if not forever
                    else datetime.now(UTC) + timedelta(days=365 * 100),
                    keep_alive=FOREVER if forever else self.keep_alive,
                    pid=None,
                    port=None,
                    threads=0,
                    load_progress=1.0,
                    tokens_per_second=gate.speeds.get(name) if gate else None,
                )
            )
        return found

    def busy(self) -> bool:
        return any(g.in_flight or g.queued() for g in self.gates.values())

    def forget(self, name: str) -> None:
        """A deleted model leaves `/api/ps` at once."""
        self.seen.pop(name, None)
        self.changed()

    async def close(self) -> None:
        for gate in self.gates.values():
            gate.close()
        await self._http.aclose()
