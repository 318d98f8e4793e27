"""From an API request to a stream of Ollama response chunks: options, prompt, lease, runner.

Everything that can be refused is checked in `start_*` before the first byte goes out, so those
errors get a proper status; what fails later becomes an error line inside the stream. The lease on
a runner is taken last, when nothing is left to refuse, and an `AnswerStream` owns it: callers
use it as an async context manager, so the slot comes back on every path (an error, a cancel, a
client that leaves, a stream never iterated). Prompts are rendered on a worker thread: templates
come from users and run under the limits of store/prompt.py, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from hana_protocol.durations import parse_keep_alive
from hana_protocol.errors import InvalidRequest, ModelNotFound, RunnerFailed
from hana_protocol.options import merge_options, sampling
from hana_server.history import first_kept, image_tokens, kept_messages, surely_fits
from hana_server.parsers.reply import ReplyParser
from hana_server.replies import effective_think, reply_parser, strip_old_thinking
from hana_server.requests import ChatRequest, GenerateRequest
from hana_server.scheduler import RUNNER_LOST, Lease, Scheduler
from hana_server.store.model import Model
from hana_server.store.prompt import PromptBuilder, render_off_loop
from hana_server.store.store import ModelStore

log = logging.getLogger("hana.generation")

Chunk = dict[str, Any]
# The text fields of a chunk ({"response": text} or {"message": {...}}) for a piece of text.
TextFields = Callable[[str], Chunk]
# Told the prompt and generated tokens of each finished answer: (model, prompt, generated).
TokenCounter = Callable[[str, int, int], None]


def _no_count(model: str, prompt: int, generated: int) -> None:
    pass


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def answer_chunk(model: str, fields: Chunk, *, done: bool, **final: Any) -> Chunk:
    """One line of an answer in Ollama's key order: model, time, text fields, `done`, and on the
    last line `done_reason` and the metrics."""
    return {"model": model, "created_at": now_rfc3339(), **fields, "done": done, **final}


def generate_fields(text: str) -> Chunk:
    """/api/generate carries text as `response`."""
    return {"response": text}


def chat_fields(text: str) -> Chunk:
    """/api/chat carries text as the assistant's message."""
    return {"message": {"role": "assistant", "content": text}}


def full_name(model: Model) -> str:
    """host/namespace/model:tag, as Ollama names a model in its tools and vision errors."""
    host, namespace, name, tag = model.name.parts
    return f"{host}/{namespace}/{name}:{tag}"


def runner_format(fmt: str | dict[str, Any] | None) -> dict[str, Any]:
    """Ollama's `format` as the runner's grammar fields."""
    if fmt is None or fmt == "":
        return {}
    if fmt == "json":
        return {"json_schema": {"type": "object"}}
    if isinstance(fmt, dict):
        return {"json_schema": fmt}
    raise InvalidRequest(f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object')


def runner_extras(req: ChatRequest | GenerateRequest, *, context: bool = False) -> dict[str, Any]:
    """The runner fields of a request beyond prompt, options and format: logprobs, context
    (given, and asked back when `context`), shift and truncate (sent only when not default)."""
    extras: dict[str, Any] = {}
    if req.logprobs:
        extras["logprobs"] = True
        extras["top_logprobs"] = req.top_logprobs or 0
    if req.shift is False:
        extras["shift"] = False
    if req.truncate is False:
        extras["truncate"] = False
    if context:
        extras["return_context"] = True
        previous = getattr(req, "context", None)
        if previous:
            extras["context"] = previous
    return extras


# A rendered chat: prompt, the template's stop strings, the reply parser for that prompt.
Rendered = tuple[str, list[str], ReplyParser]


async def fit_history(
    lease: Lease,
    num_ctx: int,
    *,
    messages: list[dict[str, Any]],
    rendered: Rendered,
    render: Callable[[list[dict[str, Any]]], Rendered],
    vision: bool,
) -> Rendered:
    """`rendered` if the whole conversation fits num_ctx, else the conversation without its
    oldest messages (history.py), counted with the runner's own tokenizer."""
    cache: dict[int, Rendered] = {0: rendered}

    def images(first: int) -> int:
        return image_tokens(kept_messages(messages, first)) if vision else 0

    async def rendered_from(first: int) -> Rendered:
        if first not in cache:
            kept = kept_messages(messages, first)
            cache[first] = await render_off_loop(lambda: render(kept))
        return cache[first]

    async def tokens_from(first: int) -> int:
        prompt = (await rendered_from(first))[0]
        return len(await lease.client.tokenize(prompt)) + images(first)

    if surely_fits(rendered[0], images(0), num_ctx):
        return rendered
    first = await first_kept(messages, num_ctx, tokens_from)
    if first:
        log.info(
            "chat history truncated: %d of %d messages fit num_ctx %d",
            len(kept_messages(messages, first)),
            len(messages),
            num_ctx,
        )
    return await rendered_from(first)  # rendered already, unless only the last message fits


@dataclasses.dataclass
class AnswerStream:
    """A request that passed every check and holds a lease; iterate `chunks()` at most once,
    inside `async with`, which gives the lease back however the answer ends."""

    model: Model
    lease: Lease
    payload: dict[str, Any]
    started: float
    wrap: TextFields
    count_tokens: TokenCounter = _no_count
    parser: ReplyParser | None = None  # thinking and tool calls (replies.py); None: all content

    async def __aenter__(self) -> AnswerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.lease.release()

    async def chunks(self) -> AsyncIterator[Chunk]:
        name = self.model.name.display
        try:
            async for part in self.lease.client.completion(self.payload):
                if part.get("done"):
                    if self.parser is not None and (rest := self.parser.finish()):
                        yield answer_chunk(name, self.parser.fields(rest), done=False)
                    yield self._final(name, part)
                    return
                content = part.get("content", "")
                # Tokens whose text is held back still send their logprobs (as Ollama does).
                extra = {"logprobs": part["logprobs"]} if part.get("logprobs") else {}
                if self.parser is None:
                    if content or extra:
                        yield answer_chunk(name, self.wrap(content), done=False, **extra)
                    continue
                piece = self.parser.add(content) if content else None
                if piece or extra:
                    fields = self.parser.fields(piece) if piece else self.wrap("")
                    yield answer_chunk(name, fields, done=False, **extra)
            raise RunnerFailed(RUNNER_LOST)
        except httpx.HTTPError as error:
            log.warning("runner stream for %s broke: %s", name, error)
            raise RunnerFailed(RUNNER_LOST) from error
        finally:
            self.lease.release()

    def _final(self, name: str, done: dict[str, Any]) -> Chunk:
        self.lease.record_speed(done.get("eval_count", 0), done.get("eval_duration", 0))
        self.count_tokens(name, done.get("prompt_eval_count", 0), done.get("eval_count", 0))
        metrics = {
            "total_duration": int((time.monotonic() - self.started) * 1e9),
            "load_duration": int(self.lease.load_duration * 1e9),
            "prompt_eval_count": done.get("prompt_eval_count", 0),
            "prompt_eval_duration": done.get("prompt_eval_duration", 0),
            "eval_count": done.get("eval_count", 0),
            "eval_duration": done.get("eval_duration", 0),
            "prompt_cache_count": done.get("prompt_cache_count", 0),  # hana extra
        }
        context = {"context": done["context"]} if "context" in done else {}
        return answer_chunk(
            name,
            self.wrap(""),
            done=True,
            done_reason=done.get("done_reason", "stop"),
            **context,
            **{k: v for k, v in metrics.items() if v},  # Ollama omits zero metrics
        )


class GenerationService:
    """Turns generate/chat/embed requests into runner calls."""

    def __init__(
        self,
        store: ModelStore,
        scheduler: Scheduler,
        count_tokens: TokenCounter = _no_count,
        arriving: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """`count_tokens` feeds the metrics; `arriving(name)` waits for a model that is being
        installed right now (the bundled default at first start) and says whether it waited."""
        self.store = store
        self.scheduler = scheduler
        self.count_tokens = count_tokens
        self.arriving = arriving
        # Models served elsewhere go to `remote` (a hana_server.remote.RemoteProxy, set by
        # HanaService): it has `handles(model)`, `start_generate`, `start_chat`, `embed`.
        self.remote: Any = None

    async def find(self, name: str) -> Model:
        """The model `name`; one still being installed is waited for, not a 404."""
        try:
            return self.store.get(name)
        except ModelNotFound:
            if self.arriving is None or not await self.arriving(name):
                raise
        return self.store.get(name)

    # ------------------------------------------------------------------ load/unload

    async def load_or_unload(
        self, model: Model, keep_alive: float | None, options: dict[str, Any], wrap: TextFields
    ) -> Chunk:
        """Empty prompt: load the model (done_reason load) or, with keep_alive 0, unload it."""
        if keep_alive == 0:
            self.scheduler.set_keep_alive(model, 0)
            reason = "unload"
        else:
            lease = await self.scheduler.acquire(model, options, keep_alive)
            lease.release()
            reason = "load"
        return answer_chunk(model.name.display, wrap(""), done=True, done_reason=reason)

    # ------------------------------------------------------------------ generate

    def check_common(
        self,
        model: Model,
        think: object,
        images: list[str] | None,
        sent: str = "",
        endpoint: str = "generate",
    ) -> None:
        """Ollama's capability checks, worded as Ollama words them: generate/chat/thinking name
        the model as the request wrote it (`sent`), vision by its full name."""
        quoted = json.dumps(sent or model.name.display)
        if "embedding" in model.capabilities and "completion" not in model.capabilities:
            raise InvalidRequest(f"{quoted} does not support {endpoint}")
        if think not in (None, False) and "thinking" not in model.capabilities:
            raise InvalidRequest(f"{quoted} does not support thinking")
        if images and "vision" not in model.capabilities:
            raise InvalidRequest(f"{full_name(model)} does not support vision")

    async def start_generate(self, req: GenerateRequest) -> AnswerStream | Chunk:
        """An AnswerStream to stream, or a final chunk for load/unload requests."""
        started = time.monotonic()
        model = await self.find(req.model)
        if self.remote is not None and self.remote.handles(model):
            return await self.remote.start_generate(model, req, started)
        keep_alive = parse_keep_alive(req.keep_alive)
        options = merge_options(model.parameters, req.options)
        if req.raw and (req.template or req.system or req.context):
            raise InvalidRequest("raw mode does not support template, system, or context")
        self.check_common(model, req.think, req.images, req.model)
        if req.suffix and "insert" not in model.capabilities:
            raise InvalidRequest(f"{full_name(model)} does not support insert")
        fmt = runner_format(req.format)
        if req.prompt == "":  # a load request even with a suffix, as Ollama decides
            return await self.load_or_unload(model, keep_alive, options, generate_fields)
        think = effective_think(model, req.think)
        if req.raw:
            prompt, default_stop = req.prompt, []
            parser = await render_off_loop(  # reads the model's template: off the loop too
                lambda: reply_parser(model, None, prompt=prompt, think=think, chat=False)
            )
        else:
            templated = dataclasses.replace(model, template=req.template) if req.template else model

            def render() -> tuple[str, list[str], ReplyParser]:
                builder = PromptBuilder.for_model(templated, self.scheduler.info(model))
                text = builder.generate(
                    req.prompt, system=req.system, suffix=req.suffix, think=think
                )
                found = reply_parser(model, builder.template, prompt=text, think=think, chat=False)
                return text, builder.stop, found

            prompt, default_stop, parser = await render_off_loop(render)
        return await self._complete(
            model,
            options,
            keep_alive,
            prompt,
            default_stop,
            fmt,
            started,
            generate_fields,
            parser,
            extras=runner_extras(req, context=not req.raw),
        )

    async def start_chat(self, req: ChatRequest) -> AnswerStream | Chunk:
        """Like `start_generate`, for a conversation."""
        started = time.monotonic()
        if not req.model:
            raise InvalidRequest("model is required")
        model = await self.find(req.model)
        if self.remote is not None and self.remote.handles(model):
            return await self.remote.start_chat(model, req, started)
        keep_alive = parse_keep_alive(req.keep_alive)
        options = merge_options(model.parameters, req.options)
        images = [image for m in req.messages for image in (m.images or [])]
        self.check_common(model, req.think, images, req.model, "chat")
        if req.tools and "tools" not in model.capabilities:
            raise InvalidRequest(f"{full_name(model)} does not support tools")
        fmt = runner_format(req.format)
        if not req.messages:
            return await self.load_or_unload(model, keep_alive, options, chat_fields)
        messages = strip_old_thinking(
            model, [m.model_dump(exclude_none=True) for m in req.messages]
        )
        think = effective_think(model, req.think)

        def render(conversation: list[dict[str, Any]]) -> Rendered:
            builder = PromptBuilder.for_model(model, self.scheduler.info(model))
            text = builder.chat(conversation, tools=req.tools, think=think)
            found = reply_parser(model, builder.template, prompt=text, think=think, tools=req.tools)
            return text, builder.stop, found

        rendered = await render_off_loop(lambda: render(messages))
        fit = None
        if req.truncate is not False and len(messages) > 1:
            fit = functools.partial(
                fit_history,
                messages=messages,
                rendered=rendered,
                render=render,
                vision="vision" in model.capabilities,
            )
        prompt, default_stop, parser = rendered
        return await self._complete(
            model,
            options,
            keep_alive,
            prompt,
            default_stop,
            fmt,
            started,
            chat_fields,
            parser,
            extras=runner_extras(req),
            fit=fit,
        )

    async def _complete(
        self,
        model: Model,
        options: dict[str, Any],
        keep_alive: float | None,
        prompt: str,
        default_stop: list[str],
        fmt: dict[str, Any],
        started: float,
        wrap: TextFields,
        parser: ReplyParser | None = None,
        *,
        extras: dict[str, Any] | None = None,
        fit: Callable[[Lease, int], Awaitable[Rendered]] | None = None,
    ) -> AnswerStream:
        """Lease a runner and make the answer stream. `fit(lease, num_ctx)` may render the prompt
        again once the runner (its tokenizer) is there: a chat history that does not fit."""
        # The context the request asked for, even when a runner loaded for more serves it.
        num_ctx = self.scheduler.spec_for(model, options).ctx_size
        lease = await self.scheduler.acquire(model, options, keep_alive)
        try:
            if fit is not None:
                prompt, default_stop, parser = await fit(lease, num_ctx)
        except BaseException:
            lease.release()
            raise
        runner_options = sampling(options)
        if "stop" not in runner_options and default_stop:
            runner_options["stop"] = list(default_stop)
        payload = {"prompt": prompt, "options": runner_options, **fmt, **(extras or {})}
        payload["num_ctx"] = num_ctx
        # From here on the AnswerStream owns the slot (see the module's docstring).
        return AnswerStream(model, lease, payload, started, wrap, self.count_tokens, parser)

    # ------------------------------------------------------------------ embeddings

    async def embed(
        self,
        name: str,
        inputs: list[str],
        *,
        truncate: bool = True,
        options: dict[str, Any] | None = None,
        keep_alive: object = None,
        dimensions: int | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        model = await self.find(name)
        if self.remote is not None and self.remote.handles(model):
            return await self.remote.embed(
                model,
                inputs,
                truncate=truncate,
                options=options,
                keep_alive=keep_alive,
                dimensions=dimensions,
            )
        if "embedding" not in model.capabilities:
            raise InvalidRequest(f'"{model.name.display}" does not support embeddings')
        merged = merge_options(model.parameters, options)
        lease = await self.scheduler.acquire(model, merged, parse_keep_alive(keep_alive))
        try:
            if not inputs:
                result: dict[str, Any] = {"embeddings": [], "prompt_eval_count": 0}
            else:
                result = await lease.client.embed(inputs, truncate)
        except httpx.HTTPError as error:
            raise RunnerFailed(RUNNER_LOST) from error
        finally:
            lease.release()
        if "error" in result:
            raise InvalidRequest(result["error"])
        vectors = result["embeddings"]
        self.count_tokens(model.name.display, result.get("prompt_eval_count", 0), 0)
        if dimensions:  # Ollama: 0 < dimensions < length keeps the first ones
            vectors = [_normalise(v[:dimensions]) if dimensions < len(v) else v for v in vectors]
        return {
            "model": model.name.display,
            "embeddings": vectors,
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": int(lease.load_duration * 1e9),
            "prompt_eval_count": result.get("prompt_eval_count", 0),
        }


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
