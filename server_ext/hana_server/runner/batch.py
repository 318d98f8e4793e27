"""The one llama_batch a runner reuses for every decode step, backed by arrays it owns.

The struct is llama_cpp's own `llama_batch` class; its pointers point into ctypes arrays allocated
here once, so a step allocates nothing, and long prompt chunks are filled through numpy views
instead of token-by-token ctypes assignments. Every row carries exactly one sequence id.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import llama_cpp
import numpy as np


class TokenBatch:
    """Rows of (token, position, sequence, wants output) for one `llama_decode` call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.tokens = (llama_cpp.llama_token * capacity)()
        self.positions = (llama_cpp.llama_pos * capacity)()
        self.seq_ids = (llama_cpp.llama_seq_id * capacity)()
        self.outputs = (ctypes.c_int8 * capacity)()
        self._n_seq_ids = (ctypes.c_int32 * capacity)(*([1] * capacity))
        seq_id_pointer = ctypes.POINTER(llama_cpp.llama_seq_id)
        self._seq_id_rows = (seq_id_pointer * capacity)()
        base, step = ctypes.addressof(self.seq_ids), ctypes.sizeof(llama_cpp.llama_seq_id)
        for row in range(capacity):
            self._seq_id_rows[row] = ctypes.cast(base + row * step, seq_id_pointer)

        self.struct = llama_cpp.llama_batch()
        self.struct.token = ctypes.cast(self.tokens, ctypes.POINTER(llama_cpp.llama_token))
        self.struct.embd = None
        self.struct.pos = ctypes.cast(self.positions, ctypes.POINTER(llama_cpp.llama_pos))
        self.struct.n_seq_id = ctypes.cast(self._n_seq_ids, ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = ctypes.cast(self._seq_id_rows, ctypes.POINTER(seq_id_pointer))
        self.struct.logits = ctypes.cast(self.outputs, ctypes.POINTER(ctypes.c_int8))
        self.struct.n_tokens = 0

        self._np_tokens = np.ctypeslib.as_array(self.tokens)
        self._np_positions = np.ctypeslib.as_array(self.positions)
        self._np_seq_ids = np.ctypeslib.as_array(self.seq_ids)
        self._np_outputs = np.ctypeslib.as_array(self.outputs)

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, position: int, seq_id: int, output: bool) -> int:
        """Append one row and return its index (the row to sample from when `output`)."""
        row = self.size
        self.tokens[row] = token
        self.positions[row] = position
        self.seq_ids[row] = seq_id
        self.outputs[row] = output
        self.size = row + 1
        return row

    def add_run(self, tokens: Sequence[int], first_position: int, seq_id: int) -> int:
        """Append consecutive tokens of one sequence without outputs; returns the last row."""
        start, end = self.size, self.size + len(tokens)
        self._np_tokens[start:end] = tokens
        self._np_positions[start:end] = np.arange(
            first_position, first_position + len(tokens), dtype=self._np_positions.dtype
        )
        self._np_seq_ids[start:end] = seq_id
        self._np_outputs[start:end] = 0
        self.size = end
        return end - 1

    def set_output(self, row: int) -> None:
        self.outputs[row] = 1

    def finish(self) -> llama_cpp.llama_batch:
        """The struct to pass to llama_decode, with its token count set."""
        self.struct.n_tokens = self.size
        return self.struct
