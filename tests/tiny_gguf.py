"""Tiny GGUF models for tests: a 2-layer llama with a byte-level vocabulary, written in ms.

The weights are random but seeded, so a model file is the same on every run. The output rows
of the special tokens are zeroed, which makes greedy decoding never pick EOS: `num_predict`
alone sets the length of an answer, so tests can ask for exactly N tokens.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
N_VOCAB = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layers: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    context_length: int = 4096,
    name: str = "tiny-llama",
    chat_template: str | None = None,
    pooling_type: int | None = None,
) -> Path:
    """Write a llama-architecture GGUF with random f32 weights to `path` and return it."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tokens = [*SPECIAL_TOKENS, *BYTE_TOKENS, "▁"]
    types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.NORMAL]
    )
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if pooling_type is not None:  # an embedding model, as Ollama tells them apart
        writer.add_pooling_type(gguf.PoolingType(pooling_type))

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(N_VOCAB, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = weight(N_VOCAB, n_embd)
    output[: len(SPECIAL_TOKENS)] = 0.0  # greedy decoding never reaches EOS
    writer.add_tensor("output.weight", output)
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{proj}.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(n_embd, n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
