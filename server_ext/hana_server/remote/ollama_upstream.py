"""An Ollama-native upstream (Ollama or another hana): request bodies merged with the local
Modelfile as Ollama's proxy merges them (server/routes.go), and the upstream's NDJSON relayed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hana_protocol.errors import HanaError
from hana_server.remote.transport import Exchange, parse_line
from hana_server.requests import ChatRequest, GenerateRequest
from hana_server.store.model import Model

Chunk = dict[str, Any]


def merged_options(model: Model, options: dict[str, Any] | None) -> dict[str, Any]:
    """Local PARAMETERs fill the keys the request does not set."""
    return {**model.parameters, **{k: v for k, v in (options or {}).items() if v is not None}}


def local_messages(model: Model, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Modelfile MESSAGEs first; the local SYSTEM in front unless the request starts with one."""
    merged = [*model.messages, *messages]
    if model.system and not (messages and messages[0].get("role") == "system"):
        merged.insert(0, {"role": "system", "content": model.system})
    return merged


def generate_body(model: Model, upstream: str, req: GenerateRequest) -> dict[str, Any]:
    body = req.model_dump(exclude_none=True, exclude={"name"})
    body["model"] = upstream
    body["options"] = merged_options(model, req.options)
    if not req.raw:
        if req.system is None and model.system:
            body["system"] = model.system
        # Ollama always sends a template (`{{ .Prompt }}` without one), which turns the
        # upstream's chat template off; hana sends the local one only where there is one.
        if req.template is None and model.template:
            body["template"] = model.template
    return body


def chat_body(model: Model, upstream: str, req: ChatRequest) -> dict[str, Any]:
    body = req.model_dump(exclude_none=True, exclude={"name"})
    body["model"] = upstream
    body["options"] = merged_options(model, req.options)
    body["messages"] = local_messages(model, body.get("messages", []))
    return body


def embed_body(
    model: Model,
    upstream: str,
    inputs: list[str],
    truncate: bool,
    options: dict[str, Any] | None,
    keep_alive: object,
    dimensions: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream, "input": inputs, "truncate": truncate}
    if dimensions:
        body["dimensions"] = dimensions
    merged = merged_options(model, options)
    if merged:
        body["options"] = merged
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


async def relay(exchange: Exchange, stream: bool) -> AsyncIterator[Chunk]:
    """The upstream's answer as Ollama chunks (one for `stream: false`); an error line ends the
    stream with that error, as in Ollama."""
    if not stream:
        chunk = await exchange.json()
        if not isinstance(chunk, dict):
            raise HanaError(f"remote host {exchange.spec.host} sent invalid JSON", status=502)
        if "error" in chunk:
            raise HanaError(str(chunk["error"]), status=500)
        yield chunk
        return
    async for line in exchange.lines():
        if not line.strip():
            continue
        chunk = parse_line(exchange.spec, line)
        if "error" in chunk:
            raise HanaError(str(chunk["error"]), status=500)
        yield chunk
        if chunk.get("done"):
            return
    raise HanaError(f"remote host {exchange.spec.host} ended the answer early", status=502)
