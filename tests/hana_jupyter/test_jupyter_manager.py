"""ModelManager against a real server: loading verbs, details, many prompts at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kernel_side import MODEL_A, MODEL_B
from server_harness import HanaServerProcess, wait_for

from hana_client import Answer
from hana_jupyter.manager import ModelManager
from hana_protocol.errors import ModelNotFound
from hana_protocol.formatting import parse_time


@pytest.fixture
def mgr(hana: HanaServerProcess) -> Iterator[ModelManager]:
    made = ModelManager(url=hana.url)
    yield made
    made.client.close()


def _loaded(hana: HanaServerProcess, model: str) -> dict | None:
    return next((entry for entry in hana.ps() if entry["name"] == model), None)


def test_warmup_keep_alive_unload(hana: HanaServerProcess, mgr: ModelManager) -> None:
    result = mgr.warmup(MODEL_B)
    assert result.done_reason == "load" and result.text == ""
    assert _loaded(hana, MODEL_B) is not None
    assert MODEL_B in [entry["name"] for entry in mgr.ps()]

    mgr.keep_alive(MODEL_B, "30m")
    expires = parse_time(_loaded(hana, MODEL_B)["expires_at"])
    assert expires is not None
    left = expires - datetime.now(UTC)
    assert timedelta(minutes=29) < left <= timedelta(minutes=30, seconds=5)

    mgr.unload(MODEL_B)
    wait_for(lambda: _loaded(hana, MODEL_B) is None, timeout=15)


def test_models_and_show(mgr: ModelManager) -> None:
    models = mgr.models()
    assert {MODEL_A, MODEL_B} <= {entry["name"] for entry in models}
    assert "<table>" in models._repr_html_()
    details = mgr.show(MODEL_A)
    assert dict(details.rows())["architecture"] == "llama"
    with pytest.raises(ModelNotFound):
        mgr.show("nope:1")


def test_parallel_results_keep_the_order_of_the_requests(mgr: ModelManager) -> None:
    # Each request asks for a different number of tokens, which tells the answers apart.
    requests = [
        {"model": MODEL_A, "prompt": "one", "options": {"num_predict": 7}},
        (MODEL_B, "two"),
        {
            "model": MODEL_A,
            "messages": [{"role": "user", "content": "three"}],
            "options": {"num_predict": 3},
        },
    ]
    results = mgr.parallel(requests, options={"num_predict": 5})
    assert [r.eval_count for r in results] == [7, 5, 3]
    assert [r.model for r in results] == [MODEL_A, MODEL_B, MODEL_A]


def test_parallel_failure_modes(mgr: ModelManager) -> None:
    requests = [(MODEL_A, "fine"), ("nope:1", "missing")]
    with pytest.raises(ModelNotFound):
        mgr.parallel(requests, options={"num_predict": 3})
    results = mgr.parallel(requests, options={"num_predict": 3}, return_exceptions=True)
    assert isinstance(results[0], Answer) and results[0].eval_count == 3
    assert isinstance(results[1], ModelNotFound)


async def test_async_parallel_is_awaitable_in_a_cell_loop(mgr: ModelManager) -> None:
    results = await mgr.async_parallel([(MODEL_A, "a"), (MODEL_B, "b")], options={"num_predict": 4})
    assert [r.eval_count for r in results] == [4, 4]
    await mgr.client.async_close()


def test_create_from_a_modelfile(
    hana: HanaServerProcess, mgr: ModelManager, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tiny_gguf import write_tiny_gguf

    folder = tmp_path_factory.mktemp("create")
    write_tiny_gguf(folder / "weights.gguf", seed=7)
    (folder / "Modelfile").write_text(
        'FROM ./weights.gguf\nPARAMETER num_predict 6\nSYSTEM """Be brief."""\n'
    )
    statuses: list[str] = []
    final = mgr.create(
        "tiny:made", folder / "Modelfile", progress=lambda c: statuses.append(c["status"])
    )
    assert final["status"] == "success" and statuses[-1] == "success"
    details = mgr.show("tiny:made")
    assert details.get("system") == "Be brief."
    assert mgr.generate("tiny:made", "hi").eval_count == 6
    mgr.client.delete("tiny:made")
