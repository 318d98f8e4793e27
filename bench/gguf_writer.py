"""A GGUF writer that needs only numpy (the GPU machine has no `gguf` package): llama-architecture
models with Q8_0 weights drawn from a pool of random blocks, sized for a measurement, written in
seconds. `gguf_info_of` gives hana's placement what it would read from the file with GGUFInfo."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

GGUF_ALIGN = 32
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_Q8_0 = 0, 8
Q8_BLOCK = np.dtype([("d", "<f2"), ("q", "i1", (32,))])  # 34 bytes per 32 weights


@dataclass(frozen=True)
class Shape:
    """A llama-architecture model's size."""

    n_embd: int
    n_layers: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    ctx: int = 4096

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES = {
    # TinyLlama-1.1B's shape: 1.17 GB in Q8_0.
    "bench": Shape(n_embd=2048, n_layers=22, n_head=32, n_head_kv=4, n_ff=5632, n_vocab=32000),
    "bench-small": Shape(
        n_embd=2048, n_layers=12, n_head=32, n_head_kv=4, n_ff=5632, n_vocab=32000
    ),
    # For the CPU-only check of this script (2 shared cores): loads and decodes in a second.
    "tiny": Shape(n_embd=256, n_layers=4, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1024, ctx=2048),
}


def _kv(key: str, vtype: int, value: Any) -> bytes:
    def scalar(t: int, v: Any) -> bytes:
        if t == T_STR:
            data = v.encode()
            return struct.pack("<Q", len(data)) + data
        return struct.pack({T_U32: "<I", T_I32: "<i", T_F32: "<f", T_BOOL: "<?"}[t], v)

    name = key.encode()
    head = struct.pack("<Q", len(name)) + name + struct.pack("<I", vtype)
    if vtype != T_ARR:
        return head + scalar(vtype, value)
    etype, items = value
    if etype == T_STR:
        body = b"".join(scalar(T_STR, s) for s in items)
    else:
        body = np.asarray(items, dtype={T_F32: "<f4", T_I32: "<i4"}[etype]).tobytes()
    return head + struct.pack("<IQ", etype, len(items)) + body


def write_gguf(path: Path, shape: Shape, seed: int) -> dict[str, Any]:
    """Write a Q8_0 llama GGUF with random weights (byte-level vocabulary padded to n_vocab; the
    special tokens' output rows are zero, so greedy decoding never ends early). Returns the
    per-layer weight bytes, as hana's GGUFInfo would read them."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-127, 128, size=(1 << 20, 32), dtype=np.int8)  # reused random blocks
    scale = np.float16(0.035 / 127)  # uniform weights of std ~0.02
    specials = ["<unk>", "<s>", "</s>"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + ["▁"]
    tokens += [f"t{i}" for i in range(shape.n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    kv_dim = shape.n_head_kv * shape.head_dim
    meta = [
        _kv("general.architecture", T_STR, "llama"),
        _kv("general.name", T_STR, f"hana-gpu-bench-{shape.n_layers}l"),
        _kv("general.file_type", T_U32, 7),  # MOSTLY_Q8_0
        _kv("llama.context_length", T_U32, shape.ctx),
        _kv("llama.embedding_length", T_U32, shape.n_embd),
        _kv("llama.block_count", T_U32, shape.n_layers),
        _kv("llama.feed_forward_length", T_U32, shape.n_ff),
        _kv("llama.attention.head_count", T_U32, shape.n_head),
        _kv("llama.attention.head_count_kv", T_U32, shape.n_head_kv),
        _kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        _kv("llama.rope.dimension_count", T_U32, shape.head_dim),
        _kv("tokenizer.ggml.model", T_STR, "llama"),
        _kv("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        _kv("tokenizer.ggml.scores", T_ARR, (T_F32, [0.0] * len(tokens))),
        _kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
        _kv("tokenizer.ggml.unknown_token_id", T_U32, 0),
        _kv("tokenizer.ggml.bos_token_id", T_U32, 1),
        _kv("tokenizer.ggml.eos_token_id", T_U32, 2),
        _kv("tokenizer.ggml.add_bos_token", T_BOOL, True),
    ]
    # (name, rows, cols, quantised): numpy's (rows, cols) is ggml's ne = (cols, rows).
    tensors: list[tuple[str, int, int, bool]] = [
        ("token_embd.weight", shape.n_vocab, shape.n_embd, True),
        ("output_norm.weight", 1, shape.n_embd, False),
        ("output.weight", shape.n_vocab, shape.n_embd, True),
    ]
    for i in range(shape.n_layers):
        tensors += [
            (f"blk.{i}.attn_norm.weight", 1, shape.n_embd, False),
            (f"blk.{i}.attn_q.weight", shape.n_embd, shape.n_embd, True),
            (f"blk.{i}.attn_k.weight", kv_dim, shape.n_embd, True),
            (f"blk.{i}.attn_v.weight", kv_dim, shape.n_embd, True),
            (f"blk.{i}.attn_output.weight", shape.n_embd, shape.n_embd, True),
            (f"blk.{i}.ffn_norm.weight", 1, shape.n_embd, False),
            (f"blk.{i}.ffn_gate.weight", shape.n_ff, shape.n_embd, True),
            (f"blk.{i}.ffn_up.weight", shape.n_ff, shape.n_embd, True),
            (f"blk.{i}.ffn_down.weight", shape.n_embd, shape.n_ff, True),
        ]

    def nbytes(rows: int, cols: int, quantised: bool) -> int:
        return rows * cols // 32 * Q8_BLOCK.itemsize if quantised else rows * cols * 4

    infos, offset = [], 0
    for name, rows, cols, quantised in tensors:
        data = name.encode()
        dims = [cols] if rows == 1 else [cols, rows]
        infos.append(
            struct.pack("<Q", len(data))
            + data
            + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", GGML_Q8_0 if quantised else GGML_F32, offset)
        )
        offset += -(-nbytes(rows, cols, quantised) // GGUF_ALIGN) * GGUF_ALIGN
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta)
    header += b"".join(infos)
    layer_bytes = [0] * shape.n_layers
    output_bytes = 0
    with path.open("wb") as f:
        f.write(header + b"\0" * (-len(header) % GGUF_ALIGN))
        cursor = 0
        for name, rows, cols, quantised in tensors:
            if quantised:
                n_blocks = rows * cols // 32
                blocks = np.empty(n_blocks, dtype=Q8_BLOCK)
                blocks["d"] = scale
                start = int(rng.integers(0, len(pool)))
                index = (np.arange(n_blocks) + start) % len(pool)
                blocks["q"] = pool[index]
                if name == "output.weight":
                    blocks["q"][: len(specials) * cols // 32] = 0  # never pick a special token
                raw = blocks.tobytes()
            else:
                raw = np.ones(cols, dtype="<f4").tobytes()
            f.write(raw + b"\0" * (-len(raw) % GGUF_ALIGN))
            cursor += len(raw)
            if name.startswith("blk."):
                layer_bytes[int(name.split(".")[1])] += len(raw)
            elif name in ("output.weight", "output_norm.weight"):
                output_bytes += len(raw)
    return {"layer_bytes": layer_bytes, "output_bytes": output_bytes}


def gguf_info_of(path: Path, shape: Shape, sizes: dict[str, Any]) -> SimpleNamespace:
    """What hana's placement reads from GGUFInfo (the gguf package is not on the GPU machine)."""
    kv_per_token = shape.n_layers * shape.n_head_kv * 2 * shape.head_dim * 2
    return SimpleNamespace(
        path=path,
        block_count=shape.n_layers,
        layer_bytes=tuple(sizes["layer_bytes"]),
        output_bytes=sizes["output_bytes"],
        file_size=path.stat().st_size,
        vocab_size=shape.n_vocab,
        embedding_length=shape.n_embd,
        kv_bytes_per_token=lambda: kv_per_token,
    )
