"""Out of the box: a fresh server registers the bundled gemma3:270m and answers real prompts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from server_harness import HanaServerProcess, wait_for

pytestmark = pytest.mark.gemma


def test_fresh_server_registers_and_serves_gemma(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server((), HANA_REGISTER_DEFAULT_MODEL="1")
    wait_for(
        lambda: "gemma3:270m" in [m["name"] for m in server.http.get("/api/tags").json()["models"]],
        timeout=120,
    )
    shown = server.http.post("/api/show", json={"model": "gemma3:270m"}).json()
    assert shown["details"]["family"] == "gemma3"
    assert shown["details"]["quantization_level"] == "Q4_K_M"
    assert "<start_of_turn>" in shown["template"]

    options = {"num_predict": 16, "temperature": 0}
    first = server.http.post(
        "/api/chat",
        json={
            "model": "gemma3:270m",
            "stream": False,
            "options": options,
            "messages": [{"role": "user", "content": "Name a primary colour."}],
        },
    ).json()
    assert first["done"] is True
    assert first["eval_count"] <= 16
    answer = first["message"]["content"]
    assert answer.strip()
    assert "<end_of_turn>" not in answer  # the stop string ends the turn and is not shown

    follow_up = server.http.post(
        "/api/chat",
        json={
            "model": "gemma3:270m",
            "stream": False,
            "options": options,
            "messages": [
                {"role": "user", "content": "Name a primary colour."},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "And another one?"},
            ],
        },
    ).json()
    assert follow_up["message"]["content"].strip()
    # the earlier turn is reused from the runner's cache (sliding-window model, swa_full)
    assert follow_up["prompt_cache_count"] >= first["prompt_eval_count"] - 1
    assert follow_up["prompt_eval_count"] > first["prompt_eval_count"]


def test_a_request_right_after_the_first_start_waits_for_the_bundled_model(
    start_server: Callable[..., HanaServerProcess],
) -> None:
    server = start_server((), HANA_REGISTER_DEFAULT_MODEL="1")
    # Registration copies 250 MB: it is still running when the server first answers.
    assert server.http.get("/api/tags").json()["models"] == []
    answer = server.http.post(
        "/api/generate", json={"model": "gemma3:270m", "prompt": "", "stream": False}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["done_reason"] == "load"
    missing = server.http.post("/api/generate", json={"model": "gemma3:1b", "prompt": ""})
    assert missing.status_code == 404
