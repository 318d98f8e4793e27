"""The runner's HTTP endpoints (tornado): thin handlers that check the secret, parse JSON, hand
work to the engine and stream its messages back as NDJSON. No inference happens on this thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado.iostream import StreamClosedError

from hana_protocol import jsonbody
from hana_protocol.errors import HanaError, InvalidRequest
from hana_server.runner.lifecycle import RunnerLifecycle
from hana_server.runner.settings import SECRET_HEADER

if TYPE_CHECKING:
    from hana_server.runner.serving import ServingModel

log = logging.getLogger("hana_server.runner")


class MessageChannel:
    """Messages for one request, pushed on the event loop by the engine's hand-off."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []
        self._ready = asyncio.Event()

    def push(self, message: dict[str, Any]) -> None:
        self._messages.append(message)
        self._ready.set()

    async def take(self) -> list[dict[str, Any]]:
        await self._ready.wait()
        self._ready.clear()
        messages, self._messages = self._messages, []
        return messages


class RunnerHandler(tornado.web.RequestHandler):
    """Secret check, JSON in and out, errors as `{"error": message}`."""

    lifecycle: RunnerLifecycle
    secret: bytes

    def initialize(self, lifecycle: RunnerLifecycle, secret: str) -> None:
        self.lifecycle = lifecycle
        self.secret = secret.encode()

    def prepare(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            raise tornado.web.HTTPError(403, f"missing or wrong {SECRET_HEADER} header")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            # A refused request is the client's business; the runner's log is for its own failures.
            log.debug(
                "%s %s -> %d %s", self.request.method, self.request.path, value.status_code, value
            )
        else:
            super().log_exception(typ, value, tb)

    def fail(self, error: HanaError) -> tornado.web.HTTPError:
        return tornado.web.HTTPError(error.status, error.message, reason=_reason(error.status))

    def json_body(self) -> dict[str, Any]:
        # The runner is a process boundary: it reads its input as strictly as the server does
        # (no NaN, no lone surrogates, bounded depth), whoever sent it.
        try:
            body = jsonbody.loads(self.request.body or b"{}")
        except InvalidRequest as error:
            raise tornado.web.HTTPError(400, error.message) from error
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "the body must be a JSON object")
        return body

    def serving(self) -> ServingModel:
        """The ready model; 503 while it loads, 500 if loading failed."""
        serving = self.lifecycle.serving
        if serving is None:
            if self.lifecycle.status == "error":
                raise tornado.web.HTTPError(500, self.lifecycle.error or "model failed to load")
            raise tornado.web.HTTPError(503, "loading model")
        return serving

    def send_json(self, answer: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))


def _reason(status: int) -> str | None:
    return "Client Closed Request" if status == 499 else None


class HealthHandler(RunnerHandler):
    def get(self) -> None:
        """Status, load progress and load of this runner."""
        self.send_json(self.lifecycle.health())


class CompletionHandler(RunnerHandler):
    _cancel: Any = None

    async def post(self) -> None:
        """Stream one completion as NDJSON; a closed connection cancels the sequence."""
        serving = self.serving()
        body = self.json_body()
        channel = MessageChannel()
        try:
            completion = serving.new_completion(body, channel.push)
        except HanaError as error:
            raise self.fail(error) from error
        engine = serving.engine

        def cancel() -> None:
            engine.cancel(completion)
            # A dropped sequence posts nothing more: end the loop below, or it waits forever.
            channel.push({"done": True, "done_reason": "cancelled"})

        self._cancel = cancel
        self.set_header("Content-Type", "application/x-ndjson")
        engine.submit(completion)
        try:
            finished = False
            while not finished:
                # The engine hands a fast stream over once per stream interval: every message
                # made meanwhile goes out in one write here, one read and one flush in the server.
                messages = await channel.take()
                self.write("".join(json.dumps(message) + "\n" for message in messages).encode())
                finished = any("done" in message or "error" in message for message in messages)
                await self.flush()
            self.finish()
        except StreamClosedError:
            pass
        finally:
            engine.cancel(completion)

    def on_connection_close(self) -> None:
        if self._cancel is not None:
            self._cancel()


class TokenizeHandler(RunnerHandler):
    def post(self) -> None:
        """Tokens of a text, tokenized like prompts unless told otherwise."""
        serving = self.serving()
        body = self.json_body()
        content = body.get("content")
        if not isinstance(content, str):
            raise tornado.web.HTTPError(400, "content must be a string")
        tokens = serving.tokenize(
            content,
            add_special=body.get("add_special", True) is not False,
            parse_special=body.get("parse_special", True) is not False,
        )
        self.send_json({"tokens": tokens})


class DetokenizeHandler(RunnerHandler):
    def post(self) -> None:
        """Text of a token list."""
        serving = self.serving()
        tokens = self.json_body().get("tokens")
        if not isinstance(tokens, list) or not all(
            isinstance(token, int) and not isinstance(token, bool) for token in tokens
        ):
            raise tornado.web.HTTPError(400, "tokens must be a list of integers")
        try:
            content = serving.detokenize(tokens)
        except HanaError as error:
            raise self.fail(error) from error
        self.send_json({"content": content})


class EmbeddingHandler(RunnerHandler):
    async def post(self) -> None:
        """L2-normalised embeddings of one or more inputs (runners started with --embedding)."""
        serving = self.serving()
        channel = MessageChannel()
        try:
            job = serving.new_embedding_job(self.json_body(), channel.push)
        except HanaError as error:
            raise self.fail(error) from error
        serving.engine.submit(job)
        (answer,) = await channel.take()
        if "error" in answer:
            raise tornado.web.HTTPError(500, answer["error"])
        self.send_json(answer)


class ThreadsHandler(RunnerHandler):
    def post(self) -> None:
        """Change the compute threads; the engine applies it between two decode steps."""
        threads = self.json_body().get("threads")
        # It goes into a C int inside llama.cpp; no machine has more than 4096 cores.
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 4096:
            raise tornado.web.HTTPError(400, "threads must be an integer from 1 to 4096")
        self.lifecycle.set_threads(threads)
        self.send_json({"threads": threads})


def make_runner_app(lifecycle: RunnerLifecycle, secret: str) -> tornado.web.Application:
    """The runner's endpoints (docs/internals.md), each checking `secret`."""
    args = {"lifecycle": lifecycle, "secret": secret}
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, args),
            (r"/completion", CompletionHandler, args),
            (r"/tokenize", TokenizeHandler, args),
            (r"/detokenize", DetokenizeHandler, args),
            (r"/embedding", EmbeddingHandler, args),
            (r"/threads", ThreadsHandler, args),
        ],
        # Per-request access logs would cost time and bury the lines the server shows on failure.
        log_function=lambda _handler: None,
    )
