"""The embedding engine (`--embedding`): one thread packs inputs of all pending requests into as few
decodes as possible (one sequence per input), reads the pooled vector of each sequence and returns
it L2-normalised, as Ollama's /api/embed does. Nothing is cached between decodes.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections import deque
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np

from hana_server.runner.batch import TokenBatch
from hana_server.runner.engine_thread import EngineThread
from hana_server.runner.model import LoadedModel, cells_per_sequence
from hana_server.runner.sequences import Sink


class EmbeddingJob:
    """The inputs of one /embedding request and the vectors found so far."""

    def __init__(self, inputs: list[list[int]], sink: Sink) -> None:
        self.inputs = inputs
        self.sink = sink
        self.vectors: list[list[float] | None] = [None] * len(inputs)
        self.missing = len(inputs)


class EmbeddingEngine(EngineThread):
    def __init__(
        self,
        model: LoadedModel,
        ctx: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        parallel: int,
        threads: int,
        on_crash: Callable[[str], None],
    ) -> None:
        super().__init__(ctx, loop, threads, "hana-embedding", on_crash)
        self.model = model
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = TokenBatch(int(llama_cpp.llama_n_batch(ctx)))
        self._max_sequences = min(parallel, int(llama_cpp.llama_n_seq_max(ctx)))
        self._n_out = (
            int(llama_cpp.llama_model_n_embd_out(model.ptr))
            if hasattr(llama_cpp, "llama_model_n_embd_out")
            else model.n_embd
        )
        encoder_only = bool(llama_cpp.llama_model_has_encoder(model.ptr)) and not bool(
            llama_cpp.llama_model_has_decoder(model.ptr)
        )
        self._evaluate = llama_cpp.llama_encode if encoder_only else llama_cpp.llama_decode
        # One input must fit one micro-batch and one sequence's share of the context.
        self.max_input_tokens = min(
            int(llama_cpp.llama_n_ubatch(ctx)), cells_per_sequence(ctx, parallel)
        )
        self._pending: deque[tuple[EmbeddingJob, int]] = deque()

    def submit(self, job: EmbeddingJob) -> None:
        self._submit(job)

    def _accept(self, command: EmbeddingJob) -> None:
        self._pending.extend((command, index) for index in range(len(command.inputs)))

    def _work(self) -> bool:
        if self._pending:
            self._embed_some()
        return bool(self._pending)

    def _embed_some(self) -> None:
        batch = self._batch
        batch.clear()
        packed: list[tuple[EmbeddingJob, int]] = []
        while self._pending and len(packed) < self._max_sequences:
            job, index = self._pending[0]
            tokens = job.inputs[index]
            if len(tokens) > batch.free:
                break
            self._pending.popleft()
            seq_id = len(packed)
            batch.add_run(tokens, 0, seq_id)
            for row in range(batch.size - len(tokens), batch.size):
                batch.set_output(row)
            packed.append((job, index))

        status = self._evaluate(self.ctx, batch.finish())
        try:
            if status != 0:
                self._fail_jobs({job for job, _ in packed}, f"embedding decode failed ({status})")
                return
            for seq_id, (job, index) in enumerate(packed):
                if job.missing < 0:
                    continue  # the job already failed
                pointer = llama_cpp.llama_get_embeddings_seq(self.ctx, seq_id)
                if not pointer:
                    self._fail_jobs({job}, "the model returned no pooled embedding")
                    continue
                vector = np.ctypeslib.as_array(
                    ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._n_out,)
                ).astype(np.float64)
                norm = float(np.linalg.norm(vector))
                if norm > 0.0:
                    vector /= norm
                job.vectors[index] = vector.tolist()
                job.missing -= 1
                if job.missing == 0:
                    total = sum(len(tokens) for tokens in job.inputs)
                    self._post(job.sink, {"embeddings": job.vectors, "prompt_eval_count": total})
        finally:
            if self._memory:
                llama_cpp.llama_memory_clear(self._memory, True)

    def _fail_jobs(self, jobs: set[EmbeddingJob], message: str) -> None:
        for job in jobs:
            if job.missing >= 0:
                job.missing = -1
                self._post(job.sink, {"error": message})
        self._pending = deque(item for item in self._pending if item[0] not in jobs)

    def _fail_all(self, message: str) -> None:
        jobs = {job for job, _ in self._pending} | set(self._inbox)
        self._fail_jobs(jobs, message)
