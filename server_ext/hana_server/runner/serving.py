"""`ServingModel`: the loaded model and its engine, and the translation of HTTP bodies into
engine work: prompts tokenized and fitted to the context, options checked, sampler chains built
(in the HTTP thread, so bad input is refused with 400 before anything reaches the engine).

This is the only runner module that the HTTP side reaches for llama.cpp; it is imported by the
loader thread, so the runner answers /health before llama_cpp is even imported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp

from hana_protocol.errors import InvalidRequest
from hana_server.runner.batch import TokenBatch
from hana_server.runner.embedding import EmbeddingEngine, EmbeddingJob
from hana_server.runner.engine import CompletionEngine
from hana_server.runner.model import LlamaLog, LoadedModel, cells_per_sequence, free_context
from hana_server.runner.sampling import SamplingOptions, build_sampler_chain, grammar_from_request
from hana_server.runner.sequences import CompletionSequence, Sink
from hana_server.runner.settings import RunnerSettings

log = logging.getLogger("hana_server.runner")

CONTEXT_EXCEEDED = "the input length exceeds the context length"
# The smallest context a request may ask for (the scheduler sizes runners the same way).
MIN_CONTEXT = 4


class ServingModel:
    """Everything a ready runner serves. Created by `load` on the loader thread."""

    def __init__(
        self,
        model: LoadedModel,
        ctx: Any,
        engine: CompletionEngine | EmbeddingEngine,
        settings: RunnerSettings,
        llama_log: LlamaLog,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.engine = engine
        self.settings = settings
        self._llama_log = llama_log
        # llama.cpp pads each sequence's cells up; the contract promises exactly --ctx-size.
        self.n_ctx_seq = min(settings.ctx_size, cells_per_sequence(ctx, settings.parallel))

    @classmethod
    def load(
        cls,
        settings: RunnerSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        llama_log: LlamaLog,
        on_progress: Callable[[float], None],
        should_abort: Callable[[], bool],
        on_engine_crash: Callable[[str], None],
    ) -> ServingModel:
        model = LoadedModel.load(
            settings.model,
            on_progress=on_progress,
            should_abort=should_abort,
            gpu_layers=settings.gpu_layers,
            main_gpu=settings.main_gpu,
        )
        ctx = model.new_context(settings)
        try:
            engine: CompletionEngine | EmbeddingEngine
            if settings.embedding:
                engine = EmbeddingEngine(
                    model,
                    ctx,
                    loop,
                    parallel=settings.parallel,
                    threads=settings.threads,
                    on_crash=on_engine_crash,
                )
            else:
                engine = CompletionEngine(
                    model,
                    ctx,
                    loop,
                    parallel=settings.parallel,
                    threads=settings.threads,
                    swa_full=settings.swa_full,
                    on_crash=on_engine_crash,
                    stream_interval=settings.stream_interval,
                )
            engine.start(prepare=functools.partial(_warm_up, model, ctx))
        except BaseException:
            free_context(ctx)
            model.close()
            raise
        return cls(model, ctx, engine, settings, llama_log)

    # -- requests ----------------------------------------------------------------------------

    def new_completion(self, body: Mapping[str, Any], sink: Sink) -> CompletionSequence:
        if not isinstance(self.engine, CompletionEngine):
            raise InvalidRequest("this runner serves embeddings only (started with --embedding)")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidRequest("prompt must be a string")
        options = SamplingOptions.from_options(body.get("options"))
        n_ctx = self._request_context(body.get("num_ctx"))
        grammar = grammar_from_request(body)
        top_logprobs = logprobs_request(body)
        previous = self._context_tokens(body.get("context"))
        tokens = self.model.tokenize(prompt, add_special=not previous)
        if previous:
            # Ollama prepends the earlier exchange's text; here its tokens, after BOS.
            tokens = self.model.tokenize("") + previous + tokens
        if not tokens:
            raise InvalidRequest("prompt is empty")
        context = None
        if body.get("return_context") is True:
            bos = 1 if self.model.add_bos and tokens[0] == self.model.bos else 0
            context = tokens[bos:]
        tokens = self._fit_prompt(
            tokens, options, n_ctx, truncate=body.get("truncate", True) is not False
        )
        sampler = build_sampler_chain(
            self.model.vocab,
            self.model.n_vocab,
            n_ctx,
            options,
            grammar,
            top_logprobs=top_logprobs,
        )
        # No window is longer than the context: a huge repeat_last_n must not size anything.
        window = n_ctx if options.repeat_last_n < 0 else options.repeat_last_n
        window = min(window, n_ctx)
        return CompletionSequence(
            tokens,
            sampler,
            options,
            sink,
            n_ctx=n_ctx,
            penalty_window=window,
            num_keep=self._num_keep(options, len(tokens), n_ctx),
            shift=body.get("shift", True) is not False,
            context=context,
        )

    def _request_context(self, value: Any) -> int:
        """The request's num_ctx: the runner may hold more cells per sequence (a runner loaded
        for a larger num_ctx serves smaller ones too), but a request sees only the context it
        asked for, as if a runner of its own size had been loaded (what Ollama would do)."""
        if value is None:
            return self.n_ctx_seq
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest("num_ctx must be a positive integer")
        return min(max(value, MIN_CONTEXT), self.n_ctx_seq)

    def _num_keep(self, options: SamplingOptions, prompt_length: int, n_ctx: int) -> int:
        """Tokens a context shift keeps: num_keep (-1: the whole prompt), plus BOS as Ollama
        counts it, always leaving at least one token to discard."""
        keep = prompt_length if options.num_keep < 0 else options.num_keep
        if self.model.add_bos:
            keep += 1
        return min(keep, n_ctx - 1)

    def _context_tokens(self, value: Any) -> list[int]:
        """The `context` of an earlier answer, checked against the vocabulary."""
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(token, int) and not isinstance(token, bool) for token in value
        ):
            raise InvalidRequest("context must be a list of integers")
        n_vocab = self.model.n_vocab
        for token in value:
            if not 0 <= token < n_vocab:
                raise InvalidRequest(
                    f"invalid context: token {token} is outside the vocabulary (0..{n_vocab - 1})"
                )
        return value

    def _fit_prompt(
        self, tokens: list[int], options: SamplingOptions, n_ctx: int, *, truncate: bool
    ) -> list[int]:
        """Keep a prompt that does not fit: the first num_keep tokens and the most recent rest, with
        room left for an answer (a quarter of the context, or num_predict if smaller)."""
        if len(tokens) < n_ctx:
            return tokens
        if not truncate:
            raise InvalidRequest(CONTEXT_EXCEEDED)
        room = n_ctx // 4 if options.num_predict <= 0 else min(options.num_predict, n_ctx // 4)
        target = max(1, n_ctx - max(1, room))
        keep = max(0, min(options.num_keep, target // 2))
        log.warning("prompt of %d tokens truncated to %d (context %d)", len(tokens), target, n_ctx)
        return tokens[:keep] + tokens[len(tokens) - (target - keep) :]

    def new_embedding_job(self, body: Mapping[str, Any], sink: Sink) -> EmbeddingJob:
        if not isinstance(self.engine, EmbeddingEngine):
            raise InvalidRequest(
                "this runner does not serve embeddings (start it with --embedding)"
            )
        content = body.get("content")
        if isinstance(content, str):
            content = [content]
        if not isinstance(content, list) or not all(isinstance(text, str) for text in content):
            raise InvalidRequest("content must be a string or a list of strings")
        truncate = body.get("truncate", True) is not False
        limit = self.engine.max_input_tokens
        inputs: list[list[int]] = []
        for text in content:
            tokens = self.model.tokenize(text)
            if not tokens:
                raise InvalidRequest("cannot embed an empty input")
            if len(tokens) > limit:
                if not truncate:
                    raise InvalidRequest(CONTEXT_EXCEEDED)
                tokens = tokens[:limit]
            inputs.append(tokens)
        return EmbeddingJob(inputs, sink)

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        try:
            return self.model.detokenize(tokens)
        except ValueError as error:
            raise InvalidRequest(str(error)) from error

    def set_threads(self, threads: int) -> None:
        self.engine.set_threads(threads)

    # -- state -------------------------------------------------------------------------------

    def health_fields(self) -> dict[str, Any]:
        engine = self.engine
        active = engine.active_count if isinstance(engine, CompletionEngine) else 0
        queued = engine.queued_count if isinstance(engine, CompletionEngine) else 0
        return {
            "n_ctx": self.n_ctx_seq,
            "active": active,
            "queued": queued,
            "threads": engine.threads,
            "memory_bytes": self._llama_log.buffer_bytes or self.model.size_bytes,
            "vram_bytes": self._llama_log.gpu_buffer_bytes,  # model, KV and compute on the GPU
            "gpu_layers": self._llama_log.gpu_layers,
        }

    def close(self, timeout: float) -> bool:
        """Stop the engine; frees llama memory only when the engine thread really ended."""
        if not self.engine.stop(timeout):
            return False
        free_context(self.ctx)
        self.ctx = None
        self.model.close()
        return True


def logprobs_request(body: Mapping[str, Any]) -> int | None:
    """How many alternatives to return per token (0..20), or None when logprobs are off."""
    top = body.get("top_logprobs", 0)
    if top is None:
        top = 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20")
    if body.get("logprobs") is not True:
        return None
    return top


def _warm_up(model: LoadedModel, ctx: Any) -> None:
    """One decode before the first request: pages the weights in and builds the compute graph, so
    the first answer is not slower than the rest (llama-server does the same)."""
    batch = TokenBatch(1)
    bos = int(llama_cpp.llama_vocab_bos(model.vocab))
    batch.add(bos if bos >= 0 else 0, 0, 0, True)
    status = llama_cpp.llama_decode(ctx, batch.finish())
    if status != 0:
        raise RuntimeError(f"warm-up decode failed with status {status}")
    memory = llama_cpp.llama_get_memory(ctx)
    if memory:
        llama_cpp.llama_memory_clear(memory, True)
