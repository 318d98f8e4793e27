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

from pydantic import ValidationError

from hana_protocol.errors import HanaError, InvalidRequest, ModelNotFound
from hana_server.api.base import HanaHandlerMixin, validation_message
from hana_server.generation import AnswerStream
from hana_server.requests import ChatRequest, GenerateRequest

ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
FINISH = {"stop": "stop", "length": "length"}


def openai_options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sampling fields as Ollama options (OpenAI's defaults where they differ)."""
    options: dict[str, Any] = {
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
    }
    if body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None:
        options["num_predict"] = body.get("max_completion_tokens") or body.get("max_tokens")
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            options[key] = body[key]
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    return options


def openai_format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    return None


def message_text(content: Any) -> str:
    """Content as text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                raise InvalidRequest("invalid message content type")
            if part["type"] == "image_url":
                raise InvalidRequest("images are not supported by this model")
            texts.append(part.get("text", ""))
        return "".join(texts)
    raise InvalidRequest("invalid message content type")


class OpenAIHandlerMixin(HanaHandlerMixin):
    """Errors in OpenAI's shape; bodies are plain JSON objects."""

    def body(self) -> dict[str, Any]:
        body = self.body_bytes
        if not body:
            raise InvalidRequest("missing request body")
        try:
            data = json.loads(body)
        except json.JSONDecodeError as error:
            raise InvalidRequest(f"invalid JSON: {error.msg}") from error
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        if not data.get("model"):
            raise InvalidRequest("model is required")
        return data

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
        async with contextlib.aclosing(events):  # see HanaHandlerMixin.stream_ndjson
            async for event in events:
                self.write(f"data: {json.dumps(event)}\n\n")
                await self.flush()
                self._streaming = True
        self.write("data: [DONE]\n\n")
        self.finish()

    def build(self, schema: type[Any], data: dict[str, Any]) -> Any:
        try:
            return schema.model_validate(data)
        except ValidationError as error:
            raise InvalidRequest(validation_message(error)) from error


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
            body = self.body()
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise InvalidRequest("[] is too short - 'messages'")
            native = [
                {
                    "role": m.get("role", "user"),
                    "content": message_text(m.get("content")),
                    **({"tool_name": m["name"]} if m.get("role") == "tool" and "name" in m else {}),
                }
                for m in messages
            ]
            req = self.build(
                ChatRequest,
                {
                    "model": body["model"],
                    "messages": native,
                    "options": openai_options(body),
                    "format": openai_format(body),
                    "stream": True,
                },
            )
            completion = await self.service.generation.start_chat(req)
            assert isinstance(completion, AnswerStream)
            ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            base = {
                "id": ident,
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_hana",
            }
            if body.get("stream"):
                include_usage = (body.get("stream_options") or {}).get("include_usage")
                await self.stream_sse(self._chunks(completion, base, include_usage))
                return
            chunks = [c async for c in completion.chunks()]
            text = "".join(c["message"]["content"] for c in chunks)
            final = chunks[-1]
            self.send_json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": FINISH.get(final.get("done_reason"), "stop"),
                        }
                    ],
                    "usage": usage(final),
                }
            )

        await self.run(work)

    async def _chunks(
        self, completion: AnswerStream, base: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        first = True
        async with contextlib.aclosing(completion.chunks()) as chunks:
            async for chunk in chunks:
                obj = {**base, "object": "chat.completion.chunk"}
                if chunk.get("done"):
                    yield {
                        **obj,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {},
                                "finish_reason": FINISH.get(chunk.get("done_reason"), "stop"),
                            }
                        ],
                    }
                    if include_usage:
                        yield {**obj, "choices": [], "usage": usage(chunk)}
                    return
                delta: dict[str, Any] = {"content": chunk["message"]["content"]}
                if first:
                    delta = {"role": "assistant", **delta}
                    first = False
                yield {**obj, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


class CompletionsHandler(OpenAIHandlerMixin):
    async def post(self) -> None:
        """OpenAI text completions (prompt as a string)."""

        async def work() -> None:
            body = self.body()
            prompt = body.get("prompt", "")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise InvalidRequest("invalid type for 'prompt' field: expected a string")
            req = self.build(
                GenerateRequest,
                {
                    "model": body["model"],
                    "prompt": prompt,
                    "suffix": body.get("suffix"),
                    "options": openai_options(body),
                    "format": openai_format(body),
                    "raw": False,
                },
            )
            if not prompt:
                raise InvalidRequest("prompt is required")
            completion = await self.service.generation.start_generate(req)
            assert isinstance(completion, AnswerStream)
            base = {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_hana",
            }
            if body.get("stream"):
                await self.stream_sse(self._chunks(completion, base))
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
                            "finish_reason": FINISH.get(final.get("done_reason"), "stop"),
                        }
                    ],
                    "usage": usage(final),
                }
            )

        await self.run(work)

    async def _chunks(
        self, completion: AnswerStream, base: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.aclosing(completion.chunks()) as chunks:
            async for chunk in chunks:
                reason = FINISH.get(chunk.get("done_reason"), "stop") if chunk.get("done") else None
                yield {
                    **base,
                    "choices": [{"index": 0, "text": chunk["response"], "finish_reason": reason}],
                }


class EmbeddingsHandler(OpenAIHandlerMixin):
    async def post(self) -> None:
        """OpenAI embeddings; `encoding_format` float or base64."""

        async def work() -> None:
            body = self.body()
            data = body.get("input")
            if isinstance(data, str):
                inputs = [data]
            elif isinstance(data, list) and data and all(isinstance(x, str) for x in data):
                inputs = data
            else:
                raise InvalidRequest("invalid input")
            result = await self.service.generation.embed(
                body["model"], inputs, dimensions=body.get("dimensions")
            )
            as_base64 = body.get("encoding_format") == "base64"
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
                    "model": body["model"],
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
        models = self.service.store.list()
        self.send_json({"object": "list", "data": [model_object(self.service, m) for m in models]})


class ModelHandler(OpenAIHandlerMixin):
    async def get(self, name: str) -> None:
        """One model in OpenAI's shape."""

        async def work() -> None:
            try:
                model = self.service.store.get(name)
            except ModelNotFound as error:
                raise ModelNotFound(name) from error
            self.send_json(model_object(self.service, model))

        await self.run(work)
