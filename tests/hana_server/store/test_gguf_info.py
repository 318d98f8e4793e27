"""GGUF metadata: the fields details, memory estimates and /api/show read, from real files."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from hana_server.store.gguf_info import (
    GGUFInfo,
    InvalidGGUF,
    file_type_name,
    format_parameter_count,
    is_gguf,
)
from tiny_gguf import N_VOCAB

VOCAB = 5000  # more than the 1024 elements /api/show keeps without verbose


def write_gemma_like(path: Path, *, pooling: bool = False, big_endian: bool = False) -> Path:
    """A gemma3-architecture header with a 5000-token vocabulary and two small tensors."""
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    w = gguf.GGUFWriter(str(path), "gemma3", endianess=endian)
    w.add_context_length(32768)
    w.add_embedding_length(640)
    w.add_block_count(18)
    w.add_head_count(4)
    w.add_head_count_kv(1)
    w.add_key_length(256)
    w.add_value_length(256)
    w.add_sliding_window(512)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    if pooling:
        w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(VOCAB)])
    w.add_token_scores([float(-i) for i in range(VOCAB)])
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_tensor("a.weight", np.ones((3, 5), dtype=np.float32))
    w.add_tensor("b.weight", np.ones(7, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_llama_fields(tiny_gguf_path: Path) -> None:
    info = GGUFInfo.read(tiny_gguf_path)
    n_embd, n_ff, n_layers = 64, 128, 2
    per_layer = 2 * n_embd + 4 * n_embd * n_embd + 3 * n_ff * n_embd
    expected = 2 * N_VOCAB * n_embd + n_embd + n_layers * per_layer
    assert info.architecture == "llama"
    assert info.parameter_count == expected == 115520
    assert info.parameter_size == "116K"
    assert info.file_type == "F32"
    assert (info.context_length, info.embedding_length, info.block_count) == (4096, 64, 2)
    assert (info.head_count, info.head_count_kv, info.head_dim) == (4, 4, 16)
    assert info.sliding_window == 0
    assert info.pooling_type is None
    assert info.chat_template is None
    assert info.file_size == tiny_gguf_path.stat().st_size
    # K and V, 2 layers, 4 heads of 16, f16
    assert info.kv_bytes_per_token() == 2 * 2 * 4 * 16 * 2
    assert info.kv["llama.context_length"] == 4096
    assert info.kv["general.parameter_count"] == expected


def test_arch_keys_sliding_window_and_big_arrays(tmp_path: Path) -> None:
    path = write_gemma_like(tmp_path / "g.gguf")
    info = GGUFInfo.read(path)
    assert info.architecture == "gemma3"
    assert info.parameter_count == 22
    assert info.file_type == "Q4_K_M"
    assert info.sliding_window == 512
    assert (info.head_count, info.head_count_kv, info.head_dim) == (4, 1, 256)
    assert info.kv_bytes_per_token() == 18 * 1 * (256 + 256) * 2
    assert info.chat_template == "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert info.kv["tokenizer.ggml.tokens"] == []
    assert info.kv["tokenizer.ggml.scores"] == []
    # float32 values read back in their short spelling, as Ollama shows them
    assert info.kv["gemma3.attention.layer_norm_rms_epsilon"] == 1e-06
    assert info.tensors == []

    verbose = GGUFInfo.read(path, verbose=True)
    assert verbose.kv["tokenizer.ggml.tokens"][:2] == ["tok0", "tok1"]
    assert len(verbose.kv["tokenizer.ggml.tokens"]) == VOCAB
    assert verbose.kv["tokenizer.ggml.scores"][4999] == -4999.0
    assert verbose.tensors == [
        {"name": "a.weight", "type": "F32", "shape": [5, 3]},
        {"name": "b.weight", "type": "F32", "shape": [7]},
    ]


def test_kv_agrees_with_gguf_reader(tmp_path: Path) -> None:
    path = write_gemma_like(tmp_path / "g.gguf")
    ours = GGUFInfo.read(path, verbose=True).kv
    reader = gguf.GGUFReader(str(path))
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = fld.contents()
        if isinstance(expected, float):
            assert ours[key] == pytest.approx(expected, rel=1e-6), key
        else:
            assert ours[key] == expected, key


def test_big_endian_file(tmp_path: Path) -> None:
    info = GGUFInfo.read(write_gemma_like(tmp_path / "be.gguf", big_endian=True))
    assert (info.architecture, info.context_length, info.parameter_count) == ("gemma3", 32768, 22)


def test_pooling_type_marks_embedding_models(tmp_path: Path) -> None:
    info = GGUFInfo.read(write_gemma_like(tmp_path / "e.gguf", pooling=True))
    assert info.pooling_type == int(gguf.PoolingType.MEAN)


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    assert not is_gguf(path)
    with pytest.raises(InvalidGGUF, match=r"weights\.bin is not a GGUF file") as info:
        GGUFInfo.read(path)
    assert info.value.status == 400


def test_truncated_header_is_reported_not_crashing(tiny_gguf_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_gguf_path.read_bytes()[:3000])
    assert is_gguf(path)
    with pytest.raises(InvalidGGUF, match="damaged GGUF header"):
        GGUFInfo.read(path)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (268098176, "268.10M"),
        (3212749888, "3.2B"),
        (8_000_000_000, "8B"),
        (7_000_000, "7M"),
        (115520, "116K"),
        (999, "999"),
    ],
)
def test_parameter_size_like_ollama(count: int, text: str) -> None:
    assert format_parameter_count(count) == text


@pytest.mark.parametrize(
    ("value", "name"),
    [(0, "F32"), (1, "F16"), (7, "Q8_0"), (15, "Q4_K_M"), (32, "BF16"), (15 | 1024, "Q4_K_M"),
     (None, "unknown"), (999, "unknown")],
)  # fmt: skip
def test_file_type_names(value: int | None, name: str) -> None:
    assert file_type_name(value) == name


@pytest.mark.gemma
def test_real_gemma_is_read_fast(gemma_gguf_path: Path) -> None:
    start = time.perf_counter()
    info = GGUFInfo.read(gemma_gguf_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"reading the gemma header took {elapsed:.2f} s"
    assert info.architecture == "gemma3"
    assert info.parameter_count == 268098176
    assert info.parameter_size == "268.10M"
    assert info.file_type == "Q4_K_M"
    assert (info.context_length, info.embedding_length, info.block_count) == (32768, 640, 18)
    assert (info.head_count_kv, info.head_dim, info.sliding_window) == (1, 256, 512)
    assert info.kv["tokenizer.ggml.tokens"] == []
    assert len(GGUFInfo.read(gemma_gguf_path, verbose=True).kv["tokenizer.ggml.tokens"]) == 262144
