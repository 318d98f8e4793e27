"""llama.cpp for one runner process: quiet logging, loading a GGUF with progress, making the
context, and the vocabulary helpers (tokenize, pieces, detokenize) shared by engine and handlers.

Struct fields are feature-detected from llama_cpp's own ctypes classes, never laid out by hand: the
layouts move between llama-cpp-python releases.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from hana_server.runner.settings import RunnerSettings

log = logging.getLogger("hana_server.runner")

# ggml's log levels as the library bundled with llama-cpp-python 0.3.36 reports them (checked on
# this machine: DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 continues the previous message).
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5
# "load_tensors: CUDA0 model buffer size = 12.5 MiB": the buffer's device, then its size.
_BUFFER_SIZE = re.compile(r"(\S+)\s+\S+\s+buffer size =\s*([0-9.]+) MiB")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def is_host_buffer(device: str) -> bool:
    """CPU buffers (CPU, CPU_Mapped, CPU_REPACK) and pinned host ones (CUDA_Host) are host
    memory; the rest (CUDA0, Vulkan0, Metal, ...) is on the GPU."""
    return device.upper().startswith("CPU") or device.endswith("_Host") or device.endswith(":")


class LlamaLog:
    """Receives llama.cpp's log: errors go to stderr (the server shows the last line when a runner
    fails), the rest is dropped except the buffer sizes, which are the runner's memory footprint."""

    def __init__(self) -> None:
        self.buffer_bytes = 0  # host memory
        self.gpu_buffer_bytes = 0
        self.gpu_layers = 0  # what llama.cpp says it offloaded
        self.last_error = ""
        self._last_level = 0
        self._lock = threading.Lock()
        # ctypes must keep the callback object alive as long as llama.cpp may call it.
        self._callback = llama_cpp.llama_log_callback(self._on_message)

    def install(self) -> None:
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_message(self, level: int, text: bytes | None, _user_data: Any) -> None:
        message = (text or b"").decode("utf-8", errors="replace")
        if level == _GGML_LOG_CONT:
            level = self._last_level
        self._last_level = level
        if level == _GGML_LOG_ERROR:
            sys.stderr.write(message)
            sys.stderr.flush()
            with self._lock:
                if message.strip():
                    self.last_error = message.strip()
            return
        match = _BUFFER_SIZE.search(message)
        if match:
            nbytes = int(float(match.group(2)) * 1024 * 1024)
            with self._lock:
                if is_host_buffer(match.group(1)):
                    self.buffer_bytes += nbytes
                else:
                    self.gpu_buffer_bytes += nbytes
        offloaded = _OFFLOADED.search(message)
        if offloaded:
            self.gpu_layers = int(offloaded.group(1))


_struct_fields_cache: dict[type, frozenset[str]] = {}


def struct_fields(struct: type) -> frozenset[str]:
    if struct not in _struct_fields_cache:
        _struct_fields_cache[struct] = frozenset(name for name, *_ in struct._fields_)  # type: ignore[attr-defined]
    return _struct_fields_cache[struct]


def set_fields(
    params: Any, values: dict[str, Any], *, optional: frozenset[str] = frozenset()
) -> None:
    """Set struct fields that this llama-cpp-python has; a missing required one is an error."""
    available = struct_fields(type(params))
    for name, value in values.items():
        if name in available:
            setattr(params, name, value)
        elif name not in optional:
            raise RuntimeError(f"llama_cpp {type(params).__name__} has no field {name!r}")
        else:
            log.warning("llama_cpp %s has no field %s; ignored", type(params).__name__, name)


class LoadAborted(Exception):
    """The model load was stopped because the runner is shutting down."""


class LoadedModel:
    """The weights and vocabulary of one GGUF, plus the contexts made from it."""

    def __init__(self, model: Any, path: Path) -> None:
        self.ptr = model
        self.path = path
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.n_swa = (
            int(llama_cpp.llama_model_n_swa(model))
            if hasattr(llama_cpp, "llama_model_n_swa")
            else 0
        )
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self.size_bytes = int(llama_cpp.llama_model_size(model))

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        on_progress: Callable[[float], None],
        should_abort: Callable[[], bool],
        gpu_layers: int = 0,
        main_gpu: int = 0,
    ) -> LoadedModel:
        """Load with `gpu_layers` offloaded, all to `main_gpu` (split mode none: the scheduler
        placed them on that one GPU and counts them there)."""
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()

        def progress(value: float, _user_data: Any) -> bool:
            on_progress(float(value))
            return not should_abort()

        callback = llama_cpp.llama_progress_callback(progress)
        params.progress_callback = callback
        gpu: dict[str, Any] = {"n_gpu_layers": gpu_layers}
        if gpu_layers > 0:
            gpu |= {"split_mode": int(llama_cpp.LLAMA_SPLIT_MODE_NONE), "main_gpu": main_gpu}
        set_fields(params, gpu, optional=frozenset(gpu))
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        del callback  # llama.cpp no longer calls it once loading returned
        if should_abort():
            if model:
                llama_cpp.llama_model_free(model)
            raise LoadAborted()
        if not model:
            raise RuntimeError(f"llama.cpp could not load the model {path}")
        return cls(model, path)

    def metadata(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(256)
        length = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buffer, len(buffer))
        if length < 0:
            return None
        if length >= len(buffer):
            buffer = ctypes.create_string_buffer(length + 1)
            llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buffer, len(buffer))
        return buffer.value.decode("utf-8", errors="replace")

    def pooling_type(self) -> int:
        """The GGUF's pooling type; mean pooling when the model does not name one (plain LMs)."""
        architecture = self.metadata("general.architecture")
        value = self.metadata(f"{architecture}.pooling_type") if architecture else None
        if value is None or not value.strip().lstrip("-").isdigit():
            return int(llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        pooling = int(value)
        if pooling == int(llama_cpp.LLAMA_POOLING_TYPE_NONE):
            return int(llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        return pooling

    def new_context(self, config: RunnerSettings) -> Any:
        """A context holding `ctx_size * parallel` cells, one KV stream per sequence.

        For generation kv_unified is off: each sequence then gets its own `ctx_size` cells, so one
        long answer can never starve the others, and attention for a sequence only reads its own
        cells instead of every cached cell of every slot (llama.cpp recommends this when sequences
        do not share a long prefix, the normal case for independent requests; Ollama's -np does the
        same). For embeddings it is on: separate streams make llama.cpp split a batch into
        micro-batches with equal tokens per sequence, which would cut an input in pieces and pool
        each piece on its own; one stream keeps every input whole in one micro-batch.
        """
        params = llama_cpp.llama_context_default_params()
        n_batch = max(config.batch_size, config.parallel)
        n_ubatch = n_batch
        if config.embedding:
            # A pooled embedding needs the whole input in one micro-batch.
            n_batch = n_ubatch = max(n_batch, config.ctx_size)
        values: dict[str, Any] = {
            "n_ctx": config.ctx_size * config.parallel,
            "n_batch": n_batch,
            "n_ubatch": n_ubatch,
            "n_seq_max": config.parallel,
            "n_threads": config.threads,
            "n_threads_batch": config.threads,
            "embeddings": config.embedding,
            "kv_unified": config.embedding,
            "swa_full": config.swa_full,
            "no_perf": True,
        }
        if config.embedding:
            values["pooling_type"] = self.pooling_type()
        set_fields(params, values, optional=frozenset({"kv_unified", "swa_full", "no_perf"}))
        ctx = llama_cpp.llama_init_from_model(self.ptr, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create the context (out of memory?)")
        return ctx

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Tokens of `text`; BOS added when the vocabulary asks for it and add_special is true."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buffer, capacity, add_special, parse_special
            )
            if count >= 0:
                return buffer[:count]
            capacity = -count

    def piece(self, token: int, buffer: Any | None = None) -> bytes:
        """The bytes of one token, special tokens rendered (they may carry tool-call markup)."""
        if buffer is None:
            buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[:length]

    def detokenize(self, tokens: Sequence[int]) -> str:
        buffer = ctypes.create_string_buffer(64)
        for token in tokens:
            if not 0 <= token < self.n_vocab:
                raise ValueError(f"token {token} is outside the vocabulary (0..{self.n_vocab - 1})")
        return b"".join(self.piece(token, buffer) for token in tokens).decode(
            "utf-8", errors="replace"
        )

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


def cells_per_sequence(ctx: Any, parallel: int) -> int:
    """KV cells each sequence may use (after llama.cpp's padding)."""
    if hasattr(llama_cpp, "llama_n_ctx_seq"):
        return int(llama_cpp.llama_n_ctx_seq(ctx))
    return int(llama_cpp.llama_n_ctx(ctx)) // parallel


def free_context(ctx: Any) -> None:
    if ctx:
        llama_cpp.llama_free(ctx)
