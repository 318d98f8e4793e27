"""The completion engine: one thread that alone owns the llama context and serves every request.

Each step packs one token for every generating sequence plus prompt chunks of sequences still
reading their prompt (token budget n_batch, round-robin start so no prompt starves) into ONE batch,
calls `llama_decode` once, then samples every sequence that has an output row with its own sampler
chain. HTTP threads only enqueue requests and receive messages; messages are handed to the tornado
loop in a single `call_soon_threadsafe`, at most once per stream interval (see `_flush_outbox`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import llama_cpp

from hana_server.runner.batch import TokenBatch
from hana_server.runner.engine_thread import EngineThread
from hana_server.runner.logprobs import LogprobEntries
from hana_server.runner.model import LoadedModel
from hana_server.runner.sequences import NO_TOKEN, CompletionSequence, Slot, SlotPool

log = logging.getLogger("hana_server.runner")

_UNKNOWN_PIECE: Any = object()


def _seq_id_of(completion: CompletionSequence) -> int:
    return completion.slot.seq_id if completion.slot is not None else -1


class CompletionEngine(EngineThread):
    """Continuous batching over `parallel` sequences of a context, with a per-slot prompt cache."""

    def __init__(
        self,
        model: LoadedModel,
        ctx: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        parallel: int,
        threads: int,
        swa_full: bool,
        on_crash: Callable[[str], None],
        stream_interval: float = 0.0,
    ) -> None:
        super().__init__(ctx, loop, threads, "hana-engine", on_crash, stream_interval)
        self.model = model
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = TokenBatch(int(llama_cpp.llama_n_batch(ctx)))
        self._slots = SlotPool(parallel)
        self._waiting: deque[CompletionSequence] = deque()
        self._active: list[CompletionSequence] = []
        self._round_robin = 0
        # Without a full-size SWA cache, cells older than the window are gone, so a cached prefix
        # is only usable if the window before the reuse point is still there.
        self._swa_window = model.n_swa if (model.n_swa > 0 and not swa_full) else 0
        # token -> bytes to show, or None for end-of-generation tokens; the vocabulary never changes
        self._pieces: dict[int, bytes | None] = {}
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._logprob_entries = LogprobEntries(model)
        self._can_shift = bool(llama_cpp.llama_memory_can_shift(self._memory))

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def queued_count(self) -> int:
        return len(self._waiting) + len(self._inbox)

    def submit(self, completion: CompletionSequence) -> None:
        self._submit(completion)

    def cancel(self, completion: CompletionSequence) -> None:
        """The client went away: the sequence is dropped at the next step (its KV stays cached)."""
        if not completion.finished:
            completion.cancelled = True
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    def _accept(self, command: CompletionSequence) -> None:
        self._waiting.append(command)

    def _work(self) -> bool:
        self._drop_cancelled()
        self._admit()
        if self._active:
            self._step()
        return bool(self._active)

    def _drop_cancelled(self) -> None:
        if any(completion.cancelled for completion in self._waiting):
            for completion in self._waiting:
                if completion.cancelled:
                    self._release(completion)  # frees its sampler chain; it had no slot yet
            self._waiting = deque(c for c in self._waiting if not c.finished)
        if any(completion.cancelled for completion in self._active):
            for completion in self._active:
                if completion.cancelled:
                    self._release(completion)
            self._active = [c for c in self._active if not c.finished]

    def _admit(self) -> None:
        while self._waiting:
            completion = self._waiting[0]
            taken = self._slots.acquire(completion.prompt)
            if taken is None:
                return
            self._waiting.popleft()
            slot, shared = taken
            completion.slot = slot
            completion.started_ns = time.perf_counter_ns()
            keep = self._reusable_prefix(slot, shared, len(completion.prompt))
            completion.cursor = completion.cached = keep
            tail = completion.prompt[max(0, len(completion.prompt) - completion.penalty_window) :]
            completion.sampler.prime_penalties(tail)
            self._active.append(completion)
            self._active.sort(key=_seq_id_of)

    def _reusable_prefix(self, slot: Slot, shared: int, prompt_length: int) -> int:
        """Trim the slot's KV to the part the new prompt can reuse, and return its length.

        At least the last prompt token is always evaluated again: its logits are needed to sample.
        """
        keep = min(shared, prompt_length - 1)
        if keep > 0 and self._swa_window:
            first_needed = max(0, keep - self._swa_window)
            pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory, slot.seq_id)
            if pos_min < 0 or pos_min > first_needed:
                keep = 0
        if keep < len(slot.tokens):
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
                # Some caches cannot drop a partial range; dropping a whole sequence always works.
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                keep = 0
            del slot.tokens[keep:]
        return keep

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        active = self._active
        to_sample: list[tuple[CompletionSequence, int]] = []

        # Decode rows in a fixed order (by sequence id, as `_active` is kept): a batch whose shape
        # matches the previous step lets llama.cpp reuse its compute graph. Rotating this order
        # each step measured 2x slower decodes for gemma3 at 4 streams.
        for completion in active:
            token = completion.next_token
            if token != NO_TOKEN:
                slot = completion.slot
                assert slot is not None
                row = batch.add(token, len(slot.tokens), slot.seq_id, True)
                slot.tokens.append(token)
                completion.next_token = NO_TOKEN
                to_sample.append((completion, row))

        # Prompt chunks share what is left of the budget, starting with a different sequence each
        # step so that one long prompt cannot starve the others.
        start = self._round_robin % len(active)
        self._round_robin += 1
        order = active[start:] + active[:start] if start else active
        for completion in order:
            budget = batch.free
            if budget <= 0:
                break
            remaining = len(completion.prompt) - completion.cursor
            if remaining <= 0:
                continue
            slot = completion.slot
            assert slot is not None
            chunk = completion.prompt[
                completion.cursor : completion.cursor + min(remaining, budget)
            ]
            row = batch.add_run(chunk, len(slot.tokens), slot.seq_id)
            slot.tokens.extend(chunk)
            completion.cursor += len(chunk)
            if completion.cursor == len(completion.prompt):
                batch.set_output(row)
                to_sample.append((completion, row))

        status = llama_cpp.llama_decode(self.ctx, batch.finish())
        if status != 0:
            self._decode_failed(status, order)
            return
        for completion, row in to_sample:
            self._sample(completion, row)
        if any(completion.finished for completion, _ in to_sample):
            self._active = [c for c in self._active if not c.finished]

    def _sample(self, completion: CompletionSequence, row: int) -> None:
        token = completion.sampler.sample_at(self.ctx, row)
        now = time.perf_counter_ns()
        completion.generated += 1
        if completion.generated == 1:
            completion.first_token_ns = now
        piece = self._pieces.get(token, _UNKNOWN_PIECE)
        if piece is _UNKNOWN_PIECE:
            piece = self._learn_piece(token)
        if piece is None:
            # Ollama gives no logprob for the end-of-generation token, nor puts it in `context`.
            self._finish(completion, "stop", now)
            return
        completion.add_context(token)
        if completion.wants_logprobs:
            found = completion.sampler.last_logprobs
            assert found is not None
            completion.add_logprobs(self._logprob_entries.entry(token, found))
        text, stopped = completion.take_piece(piece)
        message = completion.message(text)
        if message is not None:
            # The first text of an answer never waits: it is the time to first token.
            self._post(completion.sink, message, urgent=not completion.answering)
            completion.answering = True
        if stopped:
            completion.pending_logprobs.clear()  # tokens of the stop string: never shown
            completion.drop_unshown_context()
            self._finish(completion, "stop", now, flush=False)
            return
        if completion.generated >= completion.limit:
            self._finish(completion, "length", now)
            return
        # The token is decoded at the next free position: is there one left?
        slot = completion.slot
        assert slot is not None
        if len(slot.tokens) >= completion.n_ctx and not self._shift_context(completion, slot):
            self._finish(completion, "length", now)
            return
        completion.next_token = token

    def _shift_context(self, completion: CompletionSequence, slot: Slot) -> bool:
        """Make room in a full sequence as Ollama does: keep its first num_keep tokens, drop half
        of the rest, and move the newer half's cells back (only this sequence's own cells).
        False when the request forbids it or the cache cannot shift."""
        if not completion.shift or not self._can_shift:
            return False
        length = len(slot.tokens)
        keep = max(0, min(completion.num_keep, completion.n_ctx - 1))
        discard = (length - keep) // 2
        if discard <= 0:
            return False
        memory, seq_id = self._memory, slot.seq_id
        if not llama_cpp.llama_memory_seq_rm(memory, seq_id, keep, keep + discard):
            # The cells are in an unknown state now: the slot's cache is dropped entirely.
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
            slot.tokens.clear()
            log.warning("context shift failed for sequence %d", seq_id)
            return False
        llama_cpp.llama_memory_seq_add(memory, seq_id, keep + discard, length, -discard)
        del slot.tokens[keep : keep + discard]
        log.debug("sequence %d shifted: kept %d, discarded %d", seq_id, keep, discard)
        return True

    def _learn_piece(self, token: int) -> bytes | None:
        piece = None if self.model.is_eog(token) else self.model.piece(token, self._piece_buffer)
        self._pieces[token] = piece
        return piece

    def _finish(
        self, completion: CompletionSequence, reason: str, now: int, *, flush: bool = True
    ) -> None:
        if flush:
            message = completion.message(completion.final_text(), everything=True)
            if message is not None:
                self._post(completion.sink, message)
        self._post(completion.sink, completion.summary(reason, now))
        self._release(completion)

    def _release(self, completion: CompletionSequence) -> None:
        completion.finished = True
        completion.sampler.close()
        if completion.slot is not None:
            self._slots.release(completion.slot)

    def _decode_failed(self, status: int, completions: list[CompletionSequence]) -> None:
        # 1 = no KV slot for the batch, 2 = aborted, < 0 = error; the KV of these sequences is in an
        # unknown state, so it is dropped entirely before the slots are used again.
        log.error("llama_decode failed with status %d for %d sequences", status, len(completions))
        for completion in completions:
            self._post(completion.sink, {"error": f"llama_decode failed with status {status}"})
            slot = completion.slot
            if slot is not None:
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                slot.tokens.clear()
            self._release(completion)
        self._active = [c for c in self._active if not c.finished]

    def _fail_all(self, message: str) -> None:
        for completion in [*self._active, *self._waiting, *self._inbox]:
            if not completion.finished:
                self._post(completion.sink, {"error": message})
                completion.finished = True
