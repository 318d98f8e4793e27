"""OpenAI-compatible `/v1` routes, translated onto the native generate/chat/embed logic."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hana_protocol.errors import HanaError, ModelNotFound
from hana_server.api import openai_chat
from hana_server.api.base import HanaHandlerMixin, validated
from hana_server.generation import AnswerStream
from hana_server.openai_requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from hana_server.requests import ChatRequest, GenerateRequest
from hana_server.routing import describe as routing
from hana_server.routing.generation import route_fields

ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
FINISH = {"stop": "stop", "length": "length"}


class OpenAIHandlerMixin(HanaHandlerMixin):
    """Errors in OpenAI's shape; bodies parsed into the models of openai_requests.py."""

    def fail(self, error: HanaError) -> None:
        if self._finished:
            return
        payload = {
            "error": {
                "message": error.message,
                "type": ERROR_TYPES.get(error.status, "api_error"),
                "param": None,
                "code": None,
            }
        }
        if self._streaming:
            self.write(f"data: {json.dumps(payload)}\n\n")
            self.finish()
        else:
            self.send_json(payload, error.status)

    async def stream_sse(self, events: AsyncIterator[dict[str, Any]]) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        await self.stream_lines(events, lambda event: f"data: {json.dumps(event)}\n\n")
        self.write("data: [DONE]\n\n")
        self.finish()


def usage(final: dict[str, Any]) -> dict[str, int]:
    prompt, completion = final.get("prompt_eval_count", 0), final.get("eval_count", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ChatCompletionsHandler(OpenAIHandlerMixin):
    async def post(self) -> None:
        """OpenAI chat completions, streamed as SSE when `stream` is true."""

        async def work() -> None:
            body = self.parse(ChatCompletionRequest)
            req = validated(
                ChatRequest,
                {
                    "model": body.model,
                    "messages": openai_chat.native_messages(body),
                    "tools": body.tools,
                    "think": openai_chat.think_of(body),
                    "options": body.options(),
                    "format": body.format(),
                    "stream": True,
                    "logprobs": body.logprobs,
                    "top_logprobs": body.top_logprobs,
                },
            )
            completion = await self.service.generation.start_chat(req)
            assert isinstance(completion, AnswerStream)
            async with completion:  # the lease comes back however this ends
                await self._answer(body, completion)

        await self.run(work)

    async def _answer(self, body: ChatCompletionRequest, completion: AnswerStream) -> None:
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {
            "id": ident,
            "created": created,
            "model": body.model,
            "system_fingerprint": "fp_hana",
            **route_fields(completion),  # `auto`: the model that answered, and why
        }
        if body.stream:
            await self.stream_sse(self._chunks(completion, base, body.include_usage, body.logprobs))
            return
        chunks = [c async for c in completion.chunks()]
        message = openai_chat.whole_message(chunks)
        final = chunks[-1]
        self.send_json(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        **chat_logprobs(chunks, body.logprobs),
                        "finish_reason": openai_chat.finish_reason(
                            final.get("done_reason"), "tool_calls" in message
                        ),
                    }
                ],
                "usage": usage(final),
            }
        )

    async def _chunks(
        self,
        completion: AnswerStream,
        base: dict[str, Any],
        include_usage: bool,
        logprobs: bool | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        first, made_calls = True, False
        async with contextlib.aclosing(completion.chunks()) as chunks:
            async for chunk in chunks:
                obj = {**base, "object": "chat.completion.chunk"}
                if chunk.get("done"):
                    reason = openai_chat.finish_reason(chunk.get("done_reason"), made_calls)
                    yield {
                        **obj,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
                    }
                    if include_usage:
                        yield {**obj, "choices": [], "usage": usage(chunk)}
                    return
                deltas = openai_chat.deltas(chunk["message"])
                for n, delta in enumerate(deltas):
                    made_calls = made_calls or "tool_calls" in delta
                    if first:
                        delta = {"role": "assistant", **delta}
                        first = False
                    # A chunk's logprobs ride on its last delta only (reasoning comes first).
                    mine = [chunk] if n == len(deltas) - 1 else []
                    choice = {"index": 0, "delta": delta, **chat_logprobs(mine, bool(logprobs))}
                    yield {**obj, "choices": [{**choice, "finish_reason": None}]}


class CompletionsHandler(OpenAIHandlerMixin):
    async def post(self) -> None:
        """OpenAI text completions (prompt as a string)."""

        async def work() -> None:
            body = self.parse(CompletionRequest)
            req = validated(
                GenerateRequest,
                {
                    "model": body.model,
                    "prompt": body.prompt,
                    "suffix": body.suffix,
                    "options": body.options(),
                    "format": body.format(),
                    "raw": False,
                    **({"logprobs": True, "top_logprobs": body.logprobs} if body.logprobs else {}),
                },
            )
            completion = await self.service.generation.start_generate(req)
            assert isinstance(completion, AnswerStream)
            async with completion:  # the lease comes back however this ends
                await self._answer(body, completion)

        await self.run(work)

    async def _answer(self, body: CompletionRequest, completion: AnswerStream) -> None:
        base = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "system_fingerprint": "fp_hana",
            **route_fields(completion),  # `auto`: the model that answered, and why
        }
        if body.stream:
            await self.stream_sse(self._chunks(completion, base, bool(body.logprobs)))
            return
        chunks = [c async for c in completion.chunks()]
        final = chunks[-1]
        self.send_json(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "text": "".join(c["response"] for c in chunks),
                        **completion_logprobs(chunks, bool(body.logprobs)),
                        "finish_reason": FINISH.get(final.get("done_reason"), "stop"),
                    }
                ],
                "usage": usage(final),
            }
        )

    async def _chunks(
        self, completion: AnswerStream, base: dict[str, Any], logprobs: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.aclosing(completion.chunks()) as chunks:
            offset = 0
            async for chunk in chunks:
                reason = FINISH.get(chunk.get("done_reason"), "stop") if chunk.get("done") else None
                found = completion_logprobs([chunk], logprobs, offset)
                offset += len(chunk["response"])
                choice = {"index": 0, "text": chunk["response"], **found}
                yield {**base, "choices": [{**choice, "finish_reason": reason}]}


def chat_logprobs(chunks: list[dict[str, Any]], wanted: bool | None) -> dict[str, Any]:
    """`logprobs` of a chat choice: {"content": Ollama's entries} when asked for, else null."""
    if not wanted:
        return {"logprobs": None}
    return {"logprobs": {"content": [e for c in chunks for e in c.get("logprobs", ())]}}


def completion_logprobs(
    chunks: list[dict[str, Any]], wanted: bool, offset: int = 0
) -> dict[str, Any]:
    """`logprobs` of a text completion choice in OpenAI's legacy shape (tokens, token_logprobs,
    top_logprobs as {token: logprob}, text_offset), or null when not asked for."""
    if not wanted:
        return {"logprobs": None}
    entries = [e for c in chunks for e in c.get("logprobs", ())]
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "logprobs": {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [
                {alt["token"]: alt["logprob"] for alt in e.get("top_logprobs", ())} for e in entries
            ],
            "text_offset": offsets,
        }
    }


class EmbeddingsHandler(OpenAIHandlerMixin):
    async def post(self) -> None:
        """OpenAI embeddings; `encoding_format` float or base64."""

        async def work() -> None:
            body = self.parse(EmbeddingRequest)
            result = await self.service.generation.embed(
                body.model, list(body.input), dimensions=body.dimensions
            )
            as_base64 = body.encoding_format == "base64"
            items = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                    if as_base64
                    else v,
                }
                for i, v in enumerate(result["embeddings"])
            ]
            tokens = result.get("prompt_eval_count", 0)
            self.send_json(
                {
                    "object": "list",
                    "data": items,
                    "model": body.model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        await self.run(work)


def model_object(service: Any, model: Any) -> dict[str, Any]:
    return {
        "id": model.name.display,
        "object": "model",
        "created": int(model.modified_at.timestamp()),
        "owned_by": model.name.namespace,
    }


class ModelsHandler(OpenAIHandlerMixin):
    async def get(self) -> None:
        """Installed models in OpenAI's list shape."""
        models = [model_object(self.service, m) for m in self.service.store.list()]
        models += routing.openai_entries(self.service.router)  # `auto`
        self.send_json({"object": "list", "data": models})


class ModelHandler(OpenAIHandlerMixin):
    async def get(self, name: str) -> None:
        """One model in OpenAI's shape."""

        async def work() -> None:
            if routing.names_router(self.service.router, self.service.store, name):
                self.send_json(routing.openai_object(self.service.router))
                return
            try:
                model = self.service.store.get(name)
            except ModelNotFound as error:
                raise ModelNotFound(name) from error
            self.send_json(model_object(self.service, model))

        await self.run(work)
