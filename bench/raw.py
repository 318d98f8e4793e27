"""R1 and R2: what llama-cpp-python's low-level API does on this box with no server around it.

R1 is one sequence: prefill, then one `llama_decode` per generated token and a greedy sampler chain.
R2 is B sequences in one context (`n_seq_max` = the most B measured): one `llama_decode` per step
carrying one token of every sequence, then one greedy chain per sequence sampling its own row.
Both ignore end-of-generation tokens so every run produces exactly the asked number of tokens.

The context is made the way hana's runner makes it (per-sequence KV streams, full-size SWA cache
when the model uses sliding windows, n_batch = n_ubatch = 512), so the comparison is like for like.
Functions in llama_cpp are looked up by name and the first one present is used, because names
move between llama-cpp-python releases.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from report import summary

BATCH_SIZE = 512


def api(*names: str) -> Any:
    """The first of these llama_cpp functions that exists in the installed release."""
    for name in names:
        function = getattr(llama_cpp, name, None)
        if function is not None:
            return function
    raise RuntimeError(f"llama_cpp has none of {', '.join(names)}")


def set_fields(params: Any, values: dict[str, Any]) -> None:
    """Set the struct fields this llama_cpp has; the others do not exist in this release."""
    available = {name for name, *_ in type(params)._fields_}
    for name, value in values.items():
        if name in available:
            setattr(params, name, value)


@dataclass
class RawModel:
    """Weights and vocabulary of one GGUF loaded through the low-level API."""

    path: Path
    ptr: Any = None
    vocab: Any = None
    n_swa: int = 0

    @classmethod
    def load(cls, path: Path) -> RawModel:
        llama_cpp.llama_backend_init()
        quiet = llama_cpp.llama_log_callback(lambda _level, _text, _data: None)
        llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
        _KEEP_ALIVE.append(quiet)  # ctypes callbacks must outlive every call into llama.cpp
        params = llama_cpp.llama_model_default_params()
        set_fields(params, {"n_gpu_layers": 0})
        load = api("llama_model_load_from_file", "llama_load_model_from_file")
        ptr = load(str(path).encode(), params)
        if not ptr:
            raise RuntimeError(f"llama.cpp could not load {path}")
        vocab = api("llama_model_get_vocab")(ptr)
        n_swa = (
            int(llama_cpp.llama_model_n_swa(ptr)) if hasattr(llama_cpp, "llama_model_n_swa") else 0
        )
        return cls(path, ptr, vocab, n_swa)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, True, True)
        if count < 0:
            raise RuntimeError("tokenize buffer too small")
        return list(buffer[:count])

    def detokenize(self, tokens: Sequence[int]) -> str:
        buffer = ctypes.create_string_buffer(256)
        pieces = []
        for token in tokens:
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            pieces.append(buffer.raw[: max(n, 0)])
        return b"".join(pieces).decode("utf-8", errors="replace")

    def new_context(self, *, n_seq: int, ctx_per_seq: int, threads: int) -> Any:
        params = llama_cpp.llama_context_default_params()
        set_fields(
            params,
            {
                "n_ctx": ctx_per_seq * n_seq,
                "n_batch": max(BATCH_SIZE, n_seq),
                "n_ubatch": max(BATCH_SIZE, n_seq),
                "n_seq_max": n_seq,
                "n_threads": threads,
                "n_threads_batch": threads,
                "embeddings": False,
                "kv_unified": False,
                "swa_full": self.n_swa > 0,
                "no_perf": True,
            },
        )
        ctx = api("llama_init_from_model", "llama_new_context_with_model")(self.ptr, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create the context")
        return ctx

    def close(self) -> None:
        if self.ptr:
            api("llama_model_free", "llama_free_model")(self.ptr)
            self.ptr = None


_KEEP_ALIVE: list[Any] = []


class Batch:
    """One `llama_batch_init` batch reused for every step."""

    def __init__(self, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.struct = llama_cpp.llama_batch_init(capacity, 0, n_seq)

    def fill(self, rows: Sequence[tuple[int, int, int, bool]]) -> Any:
        """Rows of (token, position, sequence, wants logits) -> the struct for llama_decode."""
        batch = self.struct
        for i, (token, pos, seq, output) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = output
        batch.n_tokens = len(rows)
        return batch

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.struct)


def greedy_chain() -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


@dataclass
class Run:
    """One measured generation of `n_seq` sequences."""

    n_seq: int
    prompt_tokens: int
    prefill_seconds: float
    decode_steps: int
    decode_seconds: float
    tokens: list[int] = field(default_factory=list)

    @property
    def prefill_tps(self) -> float:
        return self.n_seq * self.prompt_tokens / self.prefill_seconds

    @property
    def decode_tps(self) -> float:
        """Generated tokens per second over the decode steps (the prefill's token excluded)."""
        return self.n_seq * self.decode_steps / self.decode_seconds


class RawEngine:
    """A context of `max_seq` sequences on a loaded model, cleared between runs."""

    def __init__(self, model: RawModel, *, max_seq: int, ctx_per_seq: int, threads: int) -> None:
        self.model = model
        self.max_seq = max_seq
        self.ctx = model.new_context(n_seq=max_seq, ctx_per_seq=ctx_per_seq, threads=threads)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = Batch(max(BATCH_SIZE, max_seq), max_seq)

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        status = llama_cpp.llama_decode(self.ctx, self.batch.fill(rows))
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def prefill(self, prompt: Sequence[int], seq: int) -> None:
        """Evaluate one prompt of one sequence in chunks of the batch size; logits of the last."""
        for start in range(0, len(prompt), self.batch.capacity):
            chunk = prompt[start : start + self.batch.capacity]
            last = start + len(chunk) == len(prompt)
            self._decode(
                [
                    (token, start + i, seq, last and i == len(chunk) - 1)
                    for i, token in enumerate(chunk)
                ]
            )

    def generate(self, prompt: Sequence[int], n_seq: int, n_predict: int) -> Run:
        """Prefill `n_seq` copies of the prompt, then decode until each has `n_predict` tokens."""
        if n_seq > self.max_seq:
            raise ValueError(f"{n_seq} sequences do not fit a context of {self.max_seq}")
        llama_cpp.llama_memory_clear(self.memory, True)
        chains = [greedy_chain() for _ in range(n_seq)]
        try:
            started = time.perf_counter()
            tokens = []
            for seq in range(n_seq):
                self.prefill(prompt, seq)
                tokens.append(llama_cpp.llama_sampler_sample(chains[seq], self.ctx, -1))
            prefill_seconds = time.perf_counter() - started
            generated = [[t] for t in tokens]
            position = len(prompt)
            steps = n_predict - 1
            started = time.perf_counter()
            for _ in range(steps):
                self._decode([(tokens[seq], position, seq, True) for seq in range(n_seq)])
                # End-of-generation tokens are fed back like any other: fixed-length output.
                tokens = [
                    llama_cpp.llama_sampler_sample(chains[seq], self.ctx, seq)
                    for seq in range(n_seq)
                ]
                for seq in range(n_seq):
                    generated[seq].append(tokens[seq])
                position += 1
            decode_seconds = time.perf_counter() - started
        finally:
            for chain in chains:
                llama_cpp.llama_sampler_free(chain)
        return Run(n_seq, len(prompt), prefill_seconds, steps, decode_seconds, generated[0])

    def prefill_rate(self, prompt: Sequence[int]) -> float:
        """Prompt tokens per second for one sequence reading `prompt` from an empty cache."""
        llama_cpp.llama_memory_clear(self.memory, True)
        started = time.perf_counter()
        self.prefill(prompt, 0)
        return len(prompt) / (time.perf_counter() - started)

    def close(self) -> None:
        self.batch.free()
        llama_cpp.llama_free(self.ctx)


def serve(settings: dict[str, Any]) -> None:
    """The raw side of the bench as a worker process, so run.py can interleave raw runs with
    hana's on a machine whose speed drifts (shared cores, hypervisor steal), and so the bench
    process itself never holds llama.cpp threads.

    Settings come as JSON in argv[1]. The first stdout line describes the setup (prompt tokens,
    prefill rate, system info); then each stdin line `{"n_seq": n}` is answered with one line
    about one generation of `n` sequences; `{"quit": true}` or EOF ends the worker.
    """
    model = RawModel.load(Path(settings["model"]))
    tokens = model.tokenize(settings["prompt"])
    long_tokens = model.tokenize(settings["long_prompt"])
    n_predict = int(settings["n_predict"])
    engine = RawEngine(
        model,
        max_seq=int(settings["max_seq"]),
        ctx_per_seq=int(settings["ctx_per_seq"]),
        threads=int(settings["threads"]),
    )
    try:
        engine.generate(tokens, 1, 16)  # warm-up: page cache, repacked weights, buffers
        engine.prefill_rate(long_tokens)
        prefill = [engine.prefill_rate(long_tokens) for _ in range(3)]
        _reply(
            {
                "prompt_tokens": len(tokens),
                "prefill_prompt_tokens": len(long_tokens),
                "prefill_tps": summary(prefill),
                "swa_full": model.n_swa > 0,
                "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            }
        )
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("quit"):
                break
            run = engine.generate(tokens, int(command["n_seq"]), n_predict)
            _reply(
                {
                    "decode_tps": run.decode_tps,
                    "step_ms": run.decode_seconds / run.decode_steps * 1e3,
                    "prefill_tps": run.prefill_tps,
                    "text": model.detokenize(run.tokens),
                }
            )
    finally:
        engine.close()
        model.close()


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
