"""An OpenAI-compatible upstream (vLLM, LiteLLM, llm-d, llama-server, llama_cpp.server): Ollama
requests translated to `/chat/completions` (or `/completions` for raw prompts) and the answers or
SSE streams translated back into Ollama chunks, with counts from `usage` and durations measured
here (these servers send none). The tables are in the shared reference, "OpenAI translation"."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from hana_protocol.errors import HanaError, InvalidRequest
from hana_server.remote.ollama_upstream import local_messages, merged_options
from hana_server.remote.transport import Exchange, parse_line, upstream_message
from hana_server.requests import ChatRequest, GenerateRequest
from hana_server.store.model import Model

Chunk = dict[str, Any]

SAME_NAME = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
EXTRA_BODY = ("top_k", "min_p")  # vLLM's (and llama_cpp.server's) fields beyond OpenAI's


def sampling_fields(options: dict[str, Any]) -> dict[str, Any]:
    """Ollama options as OpenAI fields; only what is set (absent = the upstream's defaults)."""
    fields = {k: options[k] for k in (*SAME_NAME, *EXTRA_BODY) if options.get(k) is not None}
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0:  # -1 / -2: no limit
        fields["max_tokens"] = num_predict
    if options.get("stop"):
        stop = options["stop"]
        fields["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if options.get("repeat_penalty") is not None:
        fields["repetition_penalty"] = options["repeat_penalty"]
    return fields


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}
    raise InvalidRequest(f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object')


def think_fields(think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    return {"reasoning_effort": think}


def openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """One Ollama message as OpenAI's (thinking is not sent back, as Ollama's client does)."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content", "")}
    if message.get("images"):
        parts: list[dict[str, Any]] = [{"type": "text", "text": out["content"]}]
        for image in message["images"]:
            url = image if image.startswith("data:") else f"data:{_mime(image)};base64,{image}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        out["content"] = parts
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call.get("id") or f"call_{i}",
                "index": i,
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.dumps(call["function"].get("arguments", {})),
                },
            }
            for i, call in enumerate(message["tool_calls"])
        ]
    if message.get("tool_name"):
        out["name"] = message["tool_name"]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def _mime(b64: str) -> str:
    head = b64[:16]
    for prefix, mime in (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lG", "image/gif")):
        if head.startswith(prefix):
            return mime
    return "image/webp" if head.startswith("UklG") else "application/octet-stream"


def _common(body: dict[str, Any], req: GenerateRequest | ChatRequest, model: Model) -> None:
    body.update(sampling_fields(merged_options(model, req.options)))
    if (fmt := response_format(req.format)) is not None:
        body["response_format"] = fmt
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:  # vLLM refuses top_logprobs without logprobs
            body["top_logprobs"] = req.top_logprobs
    if req.stream is not False:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}


def chat_body(model: Model, upstream: str, req: ChatRequest) -> dict[str, Any]:
    messages = local_messages(model, [m.model_dump(exclude_none=True) for m in req.messages])
    body: dict[str, Any] = {"model": upstream, "messages": [openai_message(m) for m in messages]}
    if req.tools:  # never `tools: []` (vLLM refuses it)
        body["tools"] = req.tools
    body.update(think_fields(req.think))
    _common(body, req, model)
    return body


def generate_body(model: Model, upstream: str, req: GenerateRequest) -> tuple[str, dict[str, Any]]:
    """`/completions` for a raw prompt, else a one-turn chat (the upstream applies its template)."""
    if req.raw:
        body: dict[str, Any] = {"model": upstream, "prompt": req.prompt}
        if req.suffix:
            body["suffix"] = req.suffix
        _common(body, req, model)
        return "/completions", body
    system = req.system if req.system is not None else model.system
    user: dict[str, Any] = {"role": "user", "content": req.prompt}
    if req.images:
        user["images"] = req.images
    messages = ([{"role": "system", "content": system}] if system else []) + [user]
    body = {"model": upstream, "messages": [openai_message(m) for m in messages]}
    body.update(think_fields(req.think))
    _common(body, req, model)
    return "/chat/completions", body


def embed_body(upstream: str, inputs: list[str], dimensions: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream, "input": inputs}
    if dimensions:
        body["dimensions"] = dimensions
    return body


def embed_result(data: Any) -> tuple[list[list[float]], int]:
    try:
        rows = sorted(data["data"], key=lambda row: row.get("index", 0))
        vectors = [list(row["embedding"]) for row in rows]
    except (KeyError, TypeError, AttributeError):
        raise HanaError("remote host sent an invalid embeddings answer", status=502) from None
    usage = data.get("usage") or {}
    return vectors, int(usage.get("prompt_tokens") or 0)


class Translation:
    """Folds one OpenAI answer (a JSON body or SSE events) into Ollama chunks."""

    def __init__(self, chat: bool, started: float) -> None:
        self.chat = chat
        self.started = started
        self.first: float | None = None
        self.last: float | None = None
        self.deltas = 0
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] = []

    def text_fields(self, content: str, thinking: str = "") -> Chunk:
        if not self.chat:
            fields: Chunk = {"response": content}
            if thinking:
                fields["thinking"] = thinking
            return fields
        message: Chunk = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        return {"message": message}

    def choice(self, data: dict[str, Any]) -> Chunk | None:
        """Take one answer or stream event; an Ollama text chunk if it carried text."""
        if data.get("usage"):
            self.usage = data["usage"]
        if isinstance(data.get("timings"), dict):
            self.timings = data["timings"]
        choices = data.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        part = choice.get("delta") or choice.get("message") or {}
        content = part.get("content") or choice.get("text") or ""
        thinking = part.get("reasoning") or part.get("reasoning_content") or ""
        for call in part.get("tool_calls") or []:
            self._tool_fragment(call)
        if (choice.get("logprobs") or {}).get("content"):
            self.logprobs.extend(choice["logprobs"]["content"])
        if "content" in part or "text" in choice or thinking:
            # One event per token: the count when no usage comes (llama_cpp.server ignores
            # stream_options; it sends an empty delta for a token that ends mid-character).
            now = time.monotonic()
            self.first = self.first or now
            self.last = now
            self.deltas += 1
        if not (content or thinking):
            return None
        return self.text_fields(content, thinking)

    def _tool_fragment(self, call: dict[str, Any]) -> None:
        index = int(call.get("index", len(self.calls)))
        entry = self.calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        function = call.get("function") or {}
        entry["id"] = entry["id"] or call.get("id")
        entry["name"] = entry["name"] or function.get("name", "")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            entry["arguments"] = json.dumps(arguments)
        elif arguments:
            entry["arguments"] += arguments

    def tool_calls(self) -> list[dict[str, Any]]:
        calls = []
        for index in sorted(self.calls):
            entry = self.calls[index]
            try:
                arguments = json.loads(entry["arguments"] or "{}")
            except ValueError:
                raise HanaError(
                    f"{entry['name']} returned invalid tool call arguments", status=500
                ) from None
            call: dict[str, Any] = {
                "function": {"index": index, "name": entry["name"], "arguments": arguments}
            }
            if entry["id"]:
                call = {"id": entry["id"], **call}
            calls.append(call)
        return calls

    def final(self, content: str = "") -> Chunk:
        """The last chunk: done_reason, Ollama's counts and durations (ns)."""
        fields = self.text_fields(content)
        calls = self.tool_calls()
        if calls and self.chat:
            fields["message"]["tool_calls"] = calls
        now = time.monotonic()
        t = self.timings
        prompt_count = int(self.usage.get("prompt_tokens") or 0)
        eval_count = int(self.usage.get("completion_tokens") or 0) or self.deltas
        if t.get("prompt_n") is not None:
            prompt_count = int(t.get("cache_n", 0)) + int(t["prompt_n"])
        metrics = {
            "total_duration": int((now - self.started) * 1e9),
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": int(
                t["prompt_ms"] * 1e6
                if "prompt_ms" in t
                else ((self.first or now) - self.started) * 1e9
            ),
            "eval_count": eval_count,
            "eval_duration": int(
                t["predicted_ms"] * 1e6
                if "predicted_ms" in t
                else ((self.last or now) - (self.first or now)) * 1e9
            ),
        }
        final: Chunk = {**fields, "done": True}
        final["done_reason"] = "length" if self.finish == "length" else "stop"
        final.update({k: v for k, v in metrics.items() if v})
        if self.logprobs:
            final["logprobs"] = self.logprobs
        return final


async def translate(
    exchange: Exchange, chat: bool, stream: bool, started: float
) -> AsyncIterator[Chunk]:
    """The upstream's answer as Ollama chunks: text chunks while streaming, then the final one."""
    translation = Translation(chat, started)
    if not stream:
        data = await exchange.json()
        if not isinstance(data, dict) or "error" in data:
            raise HanaError(upstream_message(json.dumps(data).encode()), status=500)
        text = translation.choice(data) or {}
        content = text.get("response") or text.get("message", {}).get("content", "")
        final = translation.final(content)
        thinking = text.get("thinking") or text.get("message", {}).get("thinking")
        if thinking:
            (final["message"] if chat else final)["thinking"] = thinking
        yield final
        return
    async for line in exchange.lines():
        if not line.startswith(b"data:"):
            continue  # SSE comments, event names, blank separators
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        data = parse_line(exchange.spec, payload)
        if "error" in data or data.get("object") == "error":
            raise HanaError(upstream_message(payload), status=500)
        chunk = translation.choice(data)
        if chunk is not None:
            yield {**chunk, "done": False}
    yield translation.final()
