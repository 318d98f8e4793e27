"""Per-request sampling: Ollama's options checked, then one native sampler chain per sequence.

Chain order: penalties -> top_k -> typical -> top_p -> min_p -> temp -> dist(seed), or penalties ->
greedy when temperature <= 0; a grammar (format) is checked next to the chain (see SamplerChain),
with the same result as putting it right after the penalties. Samplers that would not change
anything are left out, because every sampler in the chain walks the whole vocabulary on every token.

Logprobs (when a request asks) are the log-softmax of the logits after the penalties and before
any truncation (top_k, top_p, ..., grammar) or temperature: the distribution the chain starts from.
Only such requests pay for the full-vocabulary pass; the plain path stays one native call.
"""

from __future__ import annotations

import ctypes
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import LlamaGrammar

from hana_protocol.errors import InvalidRequest
from hana_protocol.options import check_option


@dataclass(frozen=True)
class SamplingOptions:
    """The Ollama options the runner acts on, with Ollama's defaults; other keys are ignored."""

    num_predict: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    stop: tuple[str, ...] = ()
    num_keep: int = 4

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> SamplingOptions:
        """Ollama's type rules: integers accept any number (truncated), floats need numbers."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise InvalidRequest("options must be an object")
        known = {field.name for field in fields(cls)}
        values = {
            name: check_option(name, value)
            for name, value in options.items()
            if name in known and value is not None
        }
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return cls(**values)


def grammar_from_request(body: Mapping[str, Any]) -> str | None:
    """The GBNF text that constrains this request, from `grammar` or `json_schema`, or None."""
    grammar = body.get("grammar")
    schema = body.get("json_schema")
    if grammar is not None and schema is not None:
        raise InvalidRequest("give either grammar or json_schema, not both")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise InvalidRequest("grammar must be a non-empty string")
        return grammar
    if schema is None:
        return None
    if not isinstance(schema, dict | bool):
        raise InvalidRequest("invalid JSON schema: expected an object")
    try:
        # The converter is a Python port of llama.cpp's; any failure on user input is a bad request.
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    except (Exception, RecursionError) as error:
        raise InvalidRequest(f"invalid JSON schema: {error}") from error


@dataclass
class TokenLogprobs:
    """The sampled token's logprob and the `top` most likely tokens (id, logprob), best first."""

    logprob: float
    top: list[tuple[int, float]]


class SamplerChain:
    """One sequence's native sampler chain and grammar; used by the engine thread only, freed once.

    Without a grammar or logprobs, `sample_at` is one native call. With logprobs the penalties
    are a sampler of their own, applied before the distribution is read, then the rest of the
    chain; `last_logprobs` then describes the token just sampled.

    With a grammar, the grammar is not part of the chain: the token is sampled from the
    unconstrained distribution and then checked against the grammar, and only if it is rejected
    is the grammar applied to the whole vocabulary and the token sampled again (llama.cpp's
    common_sampler does the same). This is exactly sampling from the masked distribution, but it
    saves a full-vocabulary grammar pass on most tokens: on gemma3's 262k vocabulary that pass
    costs more than the model's forward pass.

    A chain that is greedy alone (temperature 0, no penalties, no grammar, no logprobs) is not
    called at all: `sample_at` is an argmax over a numpy view of the row's logits. llama.cpp's
    greedy sampler picks the first largest logit, as argmax does, and accepting a token changes
    nothing in it; the native call first copies the whole vocabulary into a candidate array
    (0.7 ms a token for gemma3 here, against 0.06 ms for the argmax; docs/performance.md).
    """

    def __init__(
        self,
        chain: Any,
        penalties: Any | None,
        grammar: Any | None,
        n_vocab: int,
        *,
        top_logprobs: int | None = None,
        greedy_only: bool = False,
    ) -> None:
        self._chain = chain
        # In the chain (kept to feed it the prompt's tail), or owned here when logprobs are on.
        self._penalties = penalties
        self._grammar = grammar  # owned by this object, not by the chain
        self._n_vocab = n_vocab
        self._candidates: _Candidates | None = None
        self.top_logprobs = top_logprobs  # None: no logprobs asked for
        self.last_logprobs: TokenLogprobs | None = None
        if top_logprobs is not None:
            self.sample_at: Any = self._sample_with_logprobs
        elif grammar is not None:
            self.sample_at = self._sample_constrained
        elif greedy_only:
            logits_of, view = llama_cpp.llama_get_logits_ith, np.ctypeslib.as_array
            shape = (n_vocab,)
            self.sample_at = lambda ctx, row: int(view(logits_of(ctx, row), shape=shape).argmax())
        else:
            sample = llama_cpp.llama_sampler_sample
            self.sample_at = lambda ctx, row: sample(chain, ctx, row)

    def prime_penalties(self, prompt_tail: Sequence[int]) -> None:
        """Let repetition penalties see the end of the prompt, as llama-server does."""
        if self._penalties is None:
            return
        accept = llama_cpp.llama_sampler_accept
        for token in prompt_tail:
            accept(self._penalties, token)

    def _sample_constrained(self, ctx: Any, row: int) -> int:
        if self._candidates is None:
            self._candidates = _Candidates(self._n_vocab)
        candidates = self._candidates
        logits = llama_cpp.llama_get_logits_ith(ctx, row)
        apply = llama_cpp.llama_sampler_apply
        candidates.fill(logits)
        apply(self._chain, candidates.pointer)
        token = candidates.selected()
        if not candidates.allowed_by(self._grammar, token):
            candidates.fill(logits)
            apply(self._grammar, candidates.pointer)
            apply(self._chain, candidates.pointer)
            token = candidates.selected()
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _sample_with_logprobs(self, ctx: Any, row: int) -> int:
        if self._candidates is None:
            self._candidates = _Candidates(self._n_vocab)
        candidates = self._candidates
        logits = llama_cpp.llama_get_logits_ith(ctx, row)
        apply = llama_cpp.llama_sampler_apply
        candidates.fill(logits)
        if self._penalties is not None:
            apply(self._penalties, candidates.pointer)
        distribution = candidates.log_softmax()  # before the chain sorts or shrinks the array
        apply(self._chain, candidates.pointer)
        token = candidates.selected()
        if self._grammar is not None:
            if not candidates.allowed_by(self._grammar, token):
                candidates.fill(logits)
                if self._penalties is not None:
                    apply(self._penalties, candidates.pointer)
                apply(self._grammar, candidates.pointer)
                apply(self._chain, candidates.pointer)
                token = candidates.selected()
            llama_cpp.llama_sampler_accept(self._grammar, token)
        if self._penalties is not None:
            llama_cpp.llama_sampler_accept(self._penalties, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        self.last_logprobs = _logprobs_of(distribution, token, self.top_logprobs or 0)
        return token

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
            if self.top_logprobs is not None and self._penalties is not None:
                llama_cpp.llama_sampler_free(self._penalties)  # not part of the chain
            self._penalties = None
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
        self._candidates = None


class _Candidates:
    """The whole vocabulary as a llama_token_data_array, refilled from a row's logits through a
    numpy view (llama_cpp's own struct defines the layout), plus a one-token array for checks."""

    def __init__(self, n_vocab: int) -> None:
        self._n_vocab = n_vocab
        self._data = (llama_cpp.llama_token_data * n_vocab)()
        self._view = np.frombuffer(self._data, dtype=np.dtype(llama_cpp.llama_token_data))
        self._ids = np.arange(n_vocab, dtype=self._view.dtype["id"])
        self._array = llama_cpp.llama_token_data_array()
        self.pointer = ctypes.pointer(self._array)
        self._one_data = (llama_cpp.llama_token_data * 1)()
        self._one = llama_cpp.llama_token_data_array()
        self._one_pointer = ctypes.pointer(self._one)
        self._exp: np.ndarray | None = None  # reused buffer for the log-softmax

    def fill(self, logits: Any) -> None:
        self._view["id"] = self._ids
        self._view["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._view["p"] = 0.0
        # Samplers may shrink, sort or re-point the array: reset all of it every time.
        self._array.data = ctypes.cast(self._data, ctypes.POINTER(llama_cpp.llama_token_data))
        self._array.size = self._n_vocab
        self._array.selected = -1
        self._array.sorted = False

    def log_softmax(self) -> np.ndarray:
        """Log-probabilities of the current logits (a float32 copy; the sum is taken in float64)."""
        values = self._view["logit"].astype(np.float32)
        values -= values.max()
        total = float(np.exp(values, out=self._scratch(values)).sum(dtype=np.float64))
        values -= np.float32(math.log(total))
        return values

    def _scratch(self, like: np.ndarray) -> np.ndarray:
        if self._exp is None:
            self._exp = np.empty_like(like)
        return self._exp

    def selected(self) -> int:
        return int(self._array.data[self._array.selected].id)

    def allowed_by(self, grammar: Any, token: int) -> bool:
        entry = self._one_data[0]
        entry.id, entry.logit, entry.p = token, 1.0, 0.0
        self._one.data = ctypes.cast(self._one_data, ctypes.POINTER(llama_cpp.llama_token_data))
        self._one.size, self._one.selected, self._one.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(grammar, self._one_pointer)
        return math.isfinite(self._one_data[0].logit)


def _logprobs_of(distribution: np.ndarray, token: int, top: int) -> TokenLogprobs:
    alternatives: list[tuple[int, float]] = []
    if top > 0:
        top = min(top, len(distribution))
        best = np.argpartition(distribution, -top)[-top:]
        best = best[np.argsort(-distribution[best], kind="stable")]
        alternatives = [(int(index), float(distribution[index])) for index in best]
    return TokenLogprobs(float(distribution[token]), alternatives)


# Some llama.cpp releases take n_vocab as the first argument of the penalties sampler, some do not.
_PENALTIES_TAKES_N_VOCAB = len(llama_cpp.llama_sampler_init_penalties.argtypes or ()) == 5


def build_sampler_chain(
    vocab: Any,
    n_vocab: int,
    n_ctx: int,
    options: SamplingOptions,
    grammar: str | None,
    *,
    top_logprobs: int | None = None,
) -> SamplerChain:
    """Build the chain for one request; an invalid grammar raises InvalidRequest, never a crash.
    `top_logprobs` (0..20) turns logprobs on, None leaves them off."""
    grammar_sampler = None
    if grammar is not None:
        grammar_sampler = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), b"root"
        )
        if not grammar_sampler:
            raise InvalidRequest("invalid JSON schema or grammar: the grammar could not be parsed")

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    penalties = None
    # The penalty sampler allocates a ring of last_n tokens: never more than the context holds
    # (llama-server's -1 means exactly that), so repeat_last_n cannot grow the runner.
    last_n = n_ctx if options.repeat_last_n < 0 else min(options.repeat_last_n, n_ctx)
    # llama.cpp requires repeat_penalty > 0; Ollama treats 0 or less as "off".
    repeat = options.repeat_penalty if options.repeat_penalty > 0.0 else 1.0
    if last_n > 0 and (
        repeat != 1.0 or options.frequency_penalty != 0.0 or options.presence_penalty != 0.0
    ):
        penalty_args = (last_n, repeat, options.frequency_penalty, options.presence_penalty)
        if _PENALTIES_TAKES_N_VOCAB:
            penalty_args = (n_vocab, *penalty_args)
        penalties = llama_cpp.llama_sampler_init_penalties(*penalty_args)
        if top_logprobs is None:
            add(chain, penalties)  # else applied on its own, before the logprobs are read
    if options.temperature <= 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        greedy_only = penalties is None and grammar_sampler is None and top_logprobs is None
        return SamplerChain(
            chain,
            penalties,
            grammar_sampler,
            n_vocab,
            top_logprobs=top_logprobs,
            greedy_only=greedy_only,
        )
    if 0 < options.top_k < n_vocab:
        add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    if 0.0 < options.typical_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_typical(options.typical_p, 1))
    if 0.0 < options.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    if options.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    seed = llama_cpp.LLAMA_DEFAULT_SEED if options.seed < 0 else options.seed & 0xFFFFFFFF
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return SamplerChain(chain, penalties, grammar_sampler, n_vocab, top_logprobs=top_logprobs)
