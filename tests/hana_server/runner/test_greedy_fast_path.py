"""The greedy fast path (an argmax over the logits view) picks exactly what llama.cpp's own greedy
sampler chain picks, row by row, and is used only where the chain is greedy alone."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from hana_server.runner.batch import TokenBatch
from hana_server.runner.model import LoadedModel, free_context
from hana_server.runner.sampling import SamplingOptions, build_sampler_chain
from hana_server.runner.settings import RunnerSettings


@pytest.fixture
def loaded(tiny_gguf_path: Path):
    model = LoadedModel.load(tiny_gguf_path, on_progress=lambda _v: None, should_abort=bool)
    settings = RunnerSettings(model=tiny_gguf_path, ctx_size=256, parallel=4, threads=1)
    ctx = model.new_context(settings)
    yield model, ctx
    free_context(ctx)
    model.close()


def _native_greedy() -> object:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


def test_argmax_matches_llama_greedy_on_every_row(loaded) -> None:
    model, ctx = loaded
    greedy = SamplingOptions(temperature=0)
    fast = build_sampler_chain(model.vocab, model.n_vocab, 256, greedy, None)
    native = _native_greedy()
    try:
        batch = TokenBatch(256)
        # Four sequences with different prompts, every position an output row: many distinct rows.
        for seq in range(4):
            tokens = model.tokenize(f"sequence {seq}: the quick brown fox {seq * 7}")
            for position, token in enumerate(tokens):
                batch.add(token, position, seq, True)
        assert llama_cpp.llama_decode(ctx, batch.finish()) == 0
        picked = [fast.sample_at(ctx, row) for row in range(batch.size)]
        expected = [llama_cpp.llama_sampler_sample(native, ctx, row) for row in range(batch.size)]
        assert picked == expected
        assert len(set(picked)) > 1  # the rows really differ, so the comparison means something
    finally:
        fast.close()
        llama_cpp.llama_sampler_free(native)


@pytest.mark.parametrize(
    ("options", "grammar"),
    [
        (SamplingOptions(temperature=0, repeat_penalty=1.3), None),
        (SamplingOptions(temperature=0), 'root ::= "a"'),
        (SamplingOptions(temperature=0.7, seed=1), None),
    ],
)
def test_chains_that_are_more_than_greedy_keep_the_native_sampler(
    loaded, options: SamplingOptions, grammar: str | None
) -> None:
    model, ctx = loaded
    chain = build_sampler_chain(model.vocab, model.n_vocab, 256, options, grammar)
    try:
        batch = TokenBatch(32)
        for position, token in enumerate(model.tokenize("aaaa aaaa")):
            batch.add(token, position, 0, True)
        assert llama_cpp.llama_decode(ctx, batch.finish()) == 0
        token = chain.sample_at(ctx, batch.size - 1)
        assert 0 <= token < model.n_vocab
        if grammar is not None:
            assert model.piece(token) == b"a"  # the grammar was applied, not bypassed
        # The fast path is a plain argmax lambda; these chains go through their samplers.
        assert "argmax" not in chain.sample_at.__code__.co_names
    finally:
        chain.close()
