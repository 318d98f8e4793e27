"""Generation with the router in front: `auto` requests resolved to a model, answers labelled.

`RoutingGeneration` is the `GenerationService` a `HanaService` holds: requests that name a real
model pass straight through; requests for `auto` are classified on the text the user sent (the
prompt, or the last user message of a chat; system prompt and history count for length only),
started on the chosen tier's model with the routing options removed, and their answer carries
`hana_route` on the final chunk (`model` there is the model that answered).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from hana_protocol.errors import InvalidRequest
from hana_server.generation import AnswerStream, Chunk, GenerationService
from hana_server.requests import ChatRequest, GenerateRequest, GenerationRequest
from hana_server.routing.config import ROUTING_OPTIONS, RoutingSettings
from hana_server.routing.grading import Grader
from hana_server.routing.router import Route, Router

R = TypeVar("R", bound=GenerationRequest)


@dataclasses.dataclass
class RoutedAnswer(AnswerStream):
    """An AnswerStream already started (its first chunk read), whose final chunk says who
    answered and why (`hana_route`)."""

    route: Route | None = None
    _stream: AsyncGenerator[Chunk, None] | None = None
    _first: Chunk | None = None

    @classmethod
    async def primed(cls, answer: AnswerStream) -> RoutedAnswer:
        """Start `answer` and read its first chunk. A tier whose runner fails before it says
        anything raises here, its lease given back, so the router can try the next tier; after
        the first chunk an answer is the client's and a failure is reported in the stream."""
        fields = {f.name: getattr(answer, f.name) for f in dataclasses.fields(answer) if f.init}
        routed = cls(**fields)  # same lease, model and payload
        stream = answer.chunks()  # its own class's chunks (parsers included), run once
        assert isinstance(stream, AsyncGenerator)
        routed._stream = stream
        try:
            routed._first = await anext(routed._stream)
        except BaseException:
            await routed._stream.aclose()
            answer.lease.release()
            raise
        return routed

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # a started stream never iterated is closed here too
        await super().__aexit__(*exc)

    async def chunks(self) -> AsyncIterator[Chunk]:
        assert self._stream is not None and self._first is not None, "use RoutedAnswer.primed"
        async with contextlib.aclosing(self._stream) as rest:
            yield self._labelled(self._first)
            async for chunk in rest:
                yield self._labelled(chunk)

    def _labelled(self, chunk: Chunk) -> Chunk:
        if chunk.get("done") and self.route is not None:
            return {**chunk, "hana_route": self.route.json()}
        return chunk


def route_fields(answer: object) -> dict[str, Any]:
    """For /v1 answers: the model that answered and `hana_route`, if `answer` was routed."""
    if isinstance(answer, RoutedAnswer) and answer.route is not None:
        return {"model": answer.route.model, "hana_route": answer.route.json()}
    return {}


class RoutingGeneration(GenerationService):
    """GenerationService that resolves the router's name before anything is scheduled."""

    def __init__(self, *args: Any, routing: RoutingSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grader = Grader(self.scheduler.ps, self._grading_text, routing.route_grading_timeout)
        self.router = Router(routing, grader, self.scheduler.events.publish)

    async def start_generate(self, req: GenerateRequest) -> AnswerStream | Chunk:
        if not self.router.handles(req.model):
            return await super().start_generate(req)
        context = "\n".join(filter(None, (req.system, req.suffix)))
        return await self._routed(req, req.prompt, context, super().start_generate)

    async def start_chat(self, req: ChatRequest) -> AnswerStream | Chunk:
        if not self.router.handles(req.model):
            return await super().start_chat(req)
        last_user = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=-1)
        prompt = req.messages[last_user].content if last_user >= 0 else ""
        context = "\n".join(m.content for i, m in enumerate(req.messages) if i != last_user)
        return await self._routed(req, prompt, context, super().start_chat)

    async def embed(self, name: str, inputs: list[str], **kwargs: Any) -> dict[str, Any]:
        if self.router.handles(name) and not await self._is_stored(name):
            # Complexity tiers mean nothing for embeddings: say so in Ollama's words.
            raise InvalidRequest(f'"{name}" does not support embeddings')
        return await super().embed(name, inputs, **kwargs)

    async def _routed(
        self,
        req: R,
        prompt: str,
        context: str,
        start: Callable[[R], Awaitable[AnswerStream | Chunk]],
    ) -> AnswerStream | Chunk:
        options = dict(req.options or {})
        if not self.router.table(options) and await self._is_stored(req.model):
            return await start(req)  # a real model of that name, and nothing to route to
        plain = {k: v for k, v in options.items() if k not in ROUTING_OPTIONS} or None

        async def attempt(model: str) -> AnswerStream | Chunk:
            result = await start(req.model_copy(update={"model": model, "options": plain}))
            return await RoutedAnswer.primed(result) if isinstance(result, AnswerStream) else result

        result, route = await self.router.answer(req.model, options, prompt, context, attempt)
        if isinstance(result, RoutedAnswer):
            result.route = route
            return result
        return {**result, "hana_route": route.json()}  # a load/unload answer

    async def _is_stored(self, name: str) -> bool:
        try:
            self.store.get(name)
        except Exception:  # not there, or not even a valid name
            return False
        return True

    async def _grading_text(
        self, model: str, prompt: str, options: dict[str, object]
    ) -> AsyncGenerator[str, None]:
        """The grader's generate request: a plain one on `model`, its text pieces streamed."""
        req = GenerateRequest(model=model, prompt=prompt, options=dict(options), stream=True)
        answer = await super().start_generate(req)

        async def pieces() -> AsyncGenerator[str, None]:
            if not isinstance(answer, AnswerStream):
                return
            async with answer, contextlib.aclosing(answer.chunks()) as chunks:
                async for chunk in chunks:
                    yield str(chunk.get("response", ""))

        return pieces()
