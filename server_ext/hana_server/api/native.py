"""Handlers of Ollama's native API (`/api/...`): thin, logic in GenerationService and the store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tornado import web

from hana_protocol.errors import HanaError, InvalidRequest
from hana_server import __version__
from hana_server.api.base import HanaHandlerMixin
from hana_server.api.state import runner_json
from hana_server.generation import AnswerStream
from hana_server.requests import (
    ChatRequest,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    ShowRequest,
)
from hana_server.routing import describe as routing
from hana_server.store.blobs import parse_digest

OLLAMA_COMPATIBLE_VERSION = "0.13.0"  # what clients that check versions expect to see


def collect(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-stream answer: text fields (content, thinking, tool calls) concatenated, the last
    chunk's metrics kept."""
    final = dict(chunks[-1])
    if "response" in final:
        final["response"] = "".join(c.get("response", "") for c in chunks)
        if thinking := "".join(c.get("thinking", "") for c in chunks):
            # beside `response`, where the chunks carry it
            items = [(k, v) for k, v in final.items() if k != "thinking"]
            at = [k for k, _ in items].index("response") + 1
            final = dict([*items[:at], ("thinking", thinking), *items[at:]])
    if "message" in final:
        messages = [c.get("message", {}) for c in chunks]
        message = {**final["message"], "content": "".join(m.get("content", "") for m in messages)}
        if thinking := "".join(m.get("thinking", "") for m in messages):
            message["thinking"] = thinking
        if calls := [call for m in messages for call in m.get("tool_calls", [])]:
            message["tool_calls"] = calls
        final["message"] = message
    logprobs = [entry for c in chunks for entry in c.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs
    return final


class RootHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """Liveness, as Ollama answers it."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("Ollama is running")

    async def head(self) -> None:
        """Liveness without a body."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish()


class VersionHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """Version of the API (Ollama-compatible) and of hana."""
        self.send_json({"version": OLLAMA_COMPATIBLE_VERSION, "hana_version": __version__})

    head = get


class GenerationHandler(HanaHandlerMixin):
    """Shared by /api/generate and /api/chat."""

    async def respond(self, start: Any, stream: bool | None) -> None:
        result = await start
        if not isinstance(result, AnswerStream):
            self.send_json(result)  # load / unload
            return
        async with result:  # the lease comes back however this ends
            if stream is False:
                chunks = [chunk async for chunk in result.chunks()]
                self.send_json(collect(chunks))
            else:
                await self.stream_ndjson(result.chunks())


class GenerateHandler(GenerationHandler):
    async def post(self) -> None:
        """Complete a prompt."""

        async def work() -> None:
            req = self.parse(GenerateRequest)
            await self.respond(self.service.generation.start_generate(req), req.stream)

        await self.run(work)


class ChatHandler(GenerationHandler):
    async def post(self) -> None:
        """Answer the next turn of a conversation."""

        async def work() -> None:
            req = self.parse(ChatRequest)
            await self.respond(self.service.generation.start_chat(req), req.stream)

        await self.run(work)


class TagsHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """Installed models, newest first."""
        models = [self.service.describe(m) for m in self.service.store.list()]
        models += routing.tags_entries(self.service.router, self.service.store)  # `auto`
        self.send_json({"models": models})

    head = get


class PsHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """Loaded models with their runners' state."""
        ps: dict[str, Any] = {"models": [runner_json(r) for r in self.service.scheduler.ps()]}
        if self.service.router.active:
            ps["hana_routing"] = self.service.router.stats()  # requests per tier of `auto`
        self.send_json(ps)


class ShowHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """Everything about one model."""

        async def work() -> None:
            req = self.parse(ShowRequest)
            if not req.model:
                raise InvalidRequest("model is required")
            self.send_json(self.service.show(req.model, verbose=req.verbose))

        await self.run(work)


class CreateHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """Create a model from a GGUF blob, another model, or a Modelfile."""

        async def work() -> None:
            req = self.parse(CreateRequest)
            if not req.model:
                raise InvalidRequest("model is required")
            statuses = self.service.create(req)
            if req.stream is False:
                async for _ in statuses:
                    pass
                self.send_json({"status": "success"})
            else:
                await self.stream_ndjson(statuses)

        await self.run(work)


class CopyHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """Copy a model under a new name."""

        async def work() -> None:
            req = self.parse(CopyRequest)
            self.service.store.copy(req.source, req.destination)
            self.finish()

        await self.run(work)


class DeleteHandler(HanaHandlerMixin):
    async def delete(self) -> None:
        """Remove a model and the blobs no other model uses."""

        async def work() -> None:
            req = self.parse(DeleteRequest)
            model = self.service.store.get(req.model)
            self.service.scheduler.set_keep_alive(model, 0)
            self.service.store.delete(req.model)
            self.finish()

        await self.run(work)


class EmbedHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """Embeddings for one or many inputs (L2-normalised)."""

        async def work() -> None:
            req = self.parse(EmbedRequest)
            inputs = [req.input] if isinstance(req.input, str) else list(req.input)
            result = await self.service.generation.embed(
                req.model,
                inputs,
                truncate=req.truncate,
                options=req.options,
                keep_alive=req.keep_alive,
                dimensions=req.dimensions,
            )
            self.send_json(result)

        await self.run(work)


class EmbeddingsHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """The legacy single-prompt embedding endpoint."""

        async def work() -> None:
            req = self.parse(EmbeddingsRequest)
            inputs = [req.prompt] if req.prompt else []
            result = await self.service.generation.embed(
                req.model, inputs, options=req.options, keep_alive=req.keep_alive
            )
            vectors = result["embeddings"]
            self.send_json({"embedding": vectors[0] if vectors else []})

        await self.run(work)


class BlobHandler(HanaHandlerMixin):
    """`HEAD/POST /api/blobs/sha256:<hex>`: the upload half of `hana create` from a GGUF file.

    The body goes straight to a temp file in the store, hashed on the way; a client that leaves
    mid-upload takes the temp file with it (`on_connection_close`).
    """

    body_limit_setting = "max_upload_size"
    _spool: Any = None
    _hash: Any = None

    def _digest(self, digest: str) -> str:
        try:
            return parse_digest(digest)
        except InvalidRequest:
            raise web.HTTPError(400, "invalid digest format") from None

    async def head(self, digest: str) -> None:
        """200 if the blob exists, else 404."""
        digest = self._digest(digest)
        if not self.service.store.has_blob(digest):
            raise web.HTTPError(404, f'blob "{digest}" not found')
        self.finish()

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.request.method == "POST" and not self._finished:
            self._digest(self.path_args[0] if self.path_args else "")  # 400 before any byte
            # A temp name of the store's: an upload cut off by a crash is swept at the next start.
            self._spool = self.service.store.temp_path().open("xb")
            self._hash = hashlib.sha256()

    def receive_chunk(self, chunk: bytes) -> None:
        if self._spool is not None:
            self._spool.write(chunk)
            self._hash.update(chunk)

    async def post(self, digest: str) -> None:
        """Store the uploaded bytes if they match the digest."""
        path = Path(self._spool.name)
        self._spool.close()
        try:
            expected = self._digest(digest)
            actual = "sha256:" + self._hash.hexdigest()
            if actual != expected:
                raise web.HTTPError(400, f"digest mismatch, expected {expected}, got {actual}")
            created = self.service.store.adopt_blob(path, expected)
            self.set_status(201 if created else 200)
            self.finish()
        finally:
            if path.exists():
                os.unlink(path)

    def _discard_spool(self) -> None:
        if self._spool is not None and not self._spool.closed:
            self._spool.close()
            Path(self._spool.name).unlink(missing_ok=True)
        self._spool = None

    def on_connection_close(self) -> None:
        self._discard_spool()  # an aborted upload leaves nothing behind, at once
        super().on_connection_close()

    def on_finish(self) -> None:
        self._discard_spool()
        super().on_finish()


class PullHandler(HanaHandlerMixin):
    async def post(self) -> None:
        """Download a model from its registry, streaming Ollama's progress lines."""

        async def work() -> None:
            req = self.parse(PullRequest)
            chunks = self.service.pulls.pull(req.model, insecure=req.insecure)
            if req.stream is not False:
                await self.stream_ndjson(chunks)
                return
            try:
                last = [chunk async for chunk in chunks][-1]
            except HanaError as error:
                raise HanaError(error.message, status=500) from error  # Ollama: 500 for all
            self.send_json(last)

        await self.run(work)
