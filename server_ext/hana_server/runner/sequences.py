"""Sequence bookkeeping for the engine: KV slots that remember their tokens (the prompt cache), and
the state of one completion request between two decode steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hana_server.runner.sampling import SamplerChain, SamplingOptions
from hana_server.runner.text import StopStrings, Utf8Stream

# A sink receives the messages of one request, on the HTTP side of the hand-off.
Sink = Callable[[dict[str, Any]], None]

NO_TOKEN = -1

# Ollama caps "generate until done" (num_predict -1) at ten times the context.
UNLIMITED_PREDICT_FACTOR = 10


@dataclass(eq=False)
class Slot:
    """One llama sequence id and the tokens whose keys and values it holds, position by position."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0
    busy: bool = False


def common_prefix_length(left: Sequence[int], right: Sequence[int]) -> int:
    limit = min(len(left), len(right))
    if left[:limit] == right[:limit]:
        return limit
    for index in range(limit):
        if left[index] != right[index]:
            return index
    return limit


# A cached prefix this long is worth keeping even if its slot splits the decode (see SlotPool).
LONG_PREFIX = 256


class SlotPool:
    """The context's sequences. A new request gets, among the free slots:
    1. one whose cache shares at least LONG_PREFIX tokens with its prompt (a conversation goes on);
    2. else one next to busy slots: llama.cpp decodes a step in one micro-batch only over
       consecutive sequence ids (separate KV streams), so busy slots 0, 3, 5, 7 cost four graph
       computations a step where 0-3 cost one (measured 68 against 113 tok/s at 4 streams);
    3. then the longest shared prefix, then the least recently used, so that recent
       conversations keep their cache (Ollama's single-user policy, all that decides when
       nothing else is running)."""

    def __init__(self, count: int) -> None:
        self.slots = [Slot(seq_id) for seq_id in range(count)]
        self._clock = 0

    def free_count(self) -> int:
        return sum(1 for slot in self.slots if not slot.busy)

    def acquire(self, prompt: Sequence[int]) -> tuple[Slot, int] | None:
        best: Slot | None = None
        best_key: tuple[bool, int, int, int] | None = None
        for slot in self.slots:
            if slot.busy:
                continue
            shared = common_prefix_length(slot.tokens, prompt)
            key = (shared >= LONG_PREFIX, self._busy_neighbours(slot), shared, -slot.last_used)
            if best_key is None or key > best_key:
                best, best_key = slot, key
        if best is None or best_key is None:
            return None
        best.busy = True
        return best, best_key[2]

    def _busy_neighbours(self, slot: Slot) -> int:
        left, right = slot.seq_id - 1, slot.seq_id + 1
        return (left >= 0 and self.slots[left].busy) + (
            right < len(self.slots) and self.slots[right].busy
        )

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.last_used = self._clock
        slot.busy = False


class CompletionSequence:
    """One /completion request: its prompt, sampler, limits and text state, and its timings (ns)."""

    def __init__(
        self,
        prompt: list[int],
        sampler: SamplerChain,
        options: SamplingOptions,
        sink: Sink,
        *,
        n_ctx: int,
        penalty_window: int,
        num_keep: int = 0,
        shift: bool = True,
        context: list[int] | None = None,
    ) -> None:
        self.prompt = prompt
        self.n_ctx = n_ctx  # the context this request sees (its num_ctx, at most the slot's)
        self.prompt_count = len(prompt)  # as it came: a context shift re-feeds nothing
        self.num_keep = num_keep  # tokens a context shift keeps at the start
        self.shift = shift
        # The tokens to hand back as `context` (prompt, then answer), or None if not asked for;
        # for each answer token, the characters decoded before it (a stop string's tokens go).
        self.context = context
        self.answer_starts: list[int] = []
        self.sampler = sampler
        self.sink = sink
        # A sequence ends when its context is full anyway; the limit never exceeds the cap.
        cap = UNLIMITED_PREDICT_FACTOR * n_ctx
        self.limit = min(options.num_predict, cap) if options.num_predict > 0 else cap
        self.penalty_window = penalty_window
        self.stops = StopStrings(options.stop)
        self.utf8 = Utf8Stream()
        self.cancelled = False
        self.finished = False
        self.slot: Slot | None = None
        self.cursor = 0  # index of the next prompt token to feed
        self.cached = 0  # prompt tokens found in the slot's KV
        self.next_token = NO_TOKEN  # sampled, shown, not yet decoded
        self.generated = 0
        self.answering = False  # a message with the answer's text has been posted
        self.started_ns = 0
        self.first_token_ns = 0
        # Logprob entries not sent yet, each with the number of characters decoded before its
        # token: an entry goes out with the first chunk that shows some of its token's text.
        self.pending_logprobs: list[tuple[int, dict[str, Any]]] = []
        self.chars_decoded = 0
        self.chars_shown = 0

    @property
    def wants_logprobs(self) -> bool:
        return self.sampler.top_logprobs is not None

    def take_piece(self, piece: bytes) -> tuple[str, bool]:
        """Text to show for a new token's bytes, and whether a stop string ended the answer."""
        text = self.utf8.feed(piece)
        if not text:
            return "", False
        self.chars_decoded += len(text)
        return self.stops.feed(text)

    def add_context(self, token: int) -> None:
        """Record an answer token for `context` (call before `take_piece` shows its text)."""
        if self.context is not None:
            self.context.append(token)
            self.answer_starts.append(self.chars_decoded)

    def drop_unshown_context(self) -> None:
        """After a stop string: `context` ends with the last token that showed some text, as
        Ollama's (it tokenizes the shown answer again) has no stop string in it either."""
        if self.context is None:
            return
        unshown = sum(1 for start in self.answer_starts if start >= self.chars_shown)
        if unshown:
            del self.context[len(self.context) - unshown :]
            del self.answer_starts[len(self.answer_starts) - unshown :]

    def add_logprobs(self, entry: dict[str, Any]) -> None:
        """Queue the entry of a token about to be fed to `take_piece`."""
        self.pending_logprobs.append((self.chars_decoded, entry))

    def message(self, text: str, *, everything: bool = False) -> dict[str, Any] | None:
        """The chunk that shows `text`, with the logprobs of the tokens it shows (all pending
        ones when `everything`), or None when there is nothing to send."""
        self.chars_shown += len(text)
        if not self.pending_logprobs:
            return {"content": text} if text else None
        if everything:
            ready, self.pending_logprobs = self.pending_logprobs, []
        else:
            shown = self.chars_shown
            ready = [item for item in self.pending_logprobs if item[0] < shown]
            self.pending_logprobs = self.pending_logprobs[len(ready) :]
        if not ready:
            return {"content": text} if text else None
        return {"content": text, "logprobs": [entry for _, entry in ready]}

    def final_text(self) -> str:
        """Whatever was held back (an incomplete character, a partial stop string) when the answer
        ends by EOG or length."""
        text, stopped = self.stops.feed(self.utf8.finish())
        return text if stopped else text + self.stops.flush()

    def summary(self, reason: str, now_ns: int) -> dict[str, Any]:
        first = self.first_token_ns or now_ns
        extra = {"context": self.context} if self.context is not None else {}
        return {
            **extra,
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": self.prompt_count,
            "prompt_cache_count": self.cached,
            "prompt_eval_duration": first - self.started_ns,
            "eval_count": self.generated,
            "eval_duration": now_ns - first,
        }
