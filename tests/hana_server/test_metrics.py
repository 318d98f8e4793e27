"""`/metrics`: a Prometheus scrape after known traffic, parsed with prometheus_client's own text
parser, has exactly the numbers of the requests made (real HTTP app, scripted runners)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted_runner import Gate, Script
from scripted_server import ScriptedServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ScriptedServer) -> Samples:
    answer = server.http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_scrape_after_traffic(start_scripted_server: Callable[..., ScriptedServer]) -> None:
    server = start_scripted_server(max_loaded_models=1, num_parallel=1)
    server.create_tiny("a", seed=1)
    server.create_tiny("b", seed=2)
    gate = Gate()
    server.script("a", Script(chunks=["one", " two", " three"], gate=gate, gate_after=1))
    answers: list[dict[str, Any]] = []

    def generate(model: str, prompt: str) -> None:
        body = {"model": model, "prompt": prompt, "stream": False}
        answer = server.http.post("/api/generate", json=body)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())

    # One request holds the only slot of `a`, a second one waits for it.
    first = threading.Thread(target=generate, args=("a", "hello"))
    first.start()
    wait_until(gate.reached.is_set)
    second = threading.Thread(target=generate, args=("a", "hi there"))
    second.start()
    wait_until(lambda: value(scrape(server), "hana_queue_depth", model="a:latest") == 1)
    busy = scrape(server)
    assert value(busy, "hana_in_flight_requests", model="a:latest") == 1
    assert value(busy, "hana_runners", model="a:latest", state="busy") == 1
    assert value(busy, "hana_runners", model="a:latest", state="ready") == 0
    gate.open()
    first.join(30)
    second.join(30)
    for prompt in ("x", "yy", "zzz"):
        generate("a", prompt)
    missing = server.http.post("/api/generate", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404
    generate("b", "evict a")  # max_loaded_models=1: `a` is evicted for `b`
    wait_until(lambda: value(scrape(server), "hana_model_unloads_total", model="a:latest") == 1)
    server.service.metrics.pull_finished("success", 2.0, 1234)
    server.service.metrics.pull_finished("error", 0.5)
    with pytest.raises(ValueError, match="pull outcome"):
        server.service.metrics.pull_finished("done", 1.0)

    samples = scrape(server)
    a_answers = [answer for answer in answers if answer["model"] == "a:latest"]
    assert len(a_answers) == 5
    assert (
        value(samples, "hana_requests_total", route="/api/generate", method="POST", status="200")
        == 6
    )
    assert (
        value(samples, "hana_requests_total", route="/api/generate", method="POST", status="404")
        == 1
    )
    assert (
        value(samples, "hana_requests_total", route="/api/create", method="POST", status="200") == 2
    )
    assert (
        value(
            samples,
            "hana_requests_total",
            route="/api/blobs/{digest}",
            method="POST",
            status="201",
        )
        == 2
    )
    assert value(samples, "hana_request_duration_seconds_count", route="/api/generate") == 7
    assert value(samples, "hana_prompt_tokens_total", model="a:latest") == sum(
        answer["prompt_eval_count"] for answer in a_answers
    )
    assert value(samples, "hana_generated_tokens_total", model="a:latest") == sum(
        answer["eval_count"] for answer in a_answers
    )
    assert value(samples, "hana_generated_tokens_total", model="a:latest") == 15  # 5 x 3 chunks
    assert value(samples, "hana_model_loads_total", model="a:latest", outcome="ok") == 1
    assert value(samples, "hana_model_loads_total", model="b:latest", outcome="ok") == 1
    assert value(samples, "hana_model_load_duration_seconds_count", model="a:latest") == 1
    assert value(samples, "hana_model_evictions_total", model="a:latest") == 1
    assert value(samples, "hana_model_evictions_total", model="b:latest") == 0
    assert value(samples, "hana_model_eviction_duration_seconds_count", model="a:latest") == 1
    assert value(samples, "hana_runners", model="b:latest", state="ready") == 1
    assert value(samples, "hana_in_flight_requests", model="b:latest") == 0
    assert ("hana_runners", frozenset({("model", "a:latest"), ("state", "ready")})) not in samples
    assert value(samples, "hana_pulls_total", outcome="success") == 1
    assert value(samples, "hana_pulls_total", outcome="error") == 1
    assert value(samples, "hana_pull_bytes_total") == 1234
    assert value(samples, "hana_pull_duration_seconds_count") == 2


def test_each_server_counts_its_own(start_scripted_server: Callable[..., ScriptedServer]) -> None:
    """Two servers in one process: separate registries, refusals at the door counted too."""
    first = start_scripted_server()
    second = start_scripted_server(api_key="k")
    first.http.get("/api/tags")
    assert second.http.get("/api/tags").status_code == 401
    assert second.http.get("/metrics").status_code == 401  # the key guards the metrics too
    second.http.headers["Authorization"] = "Bearer k"
    ours, theirs = scrape(first), scrape(second)
    tags = {"route": "/api/tags", "method": "GET"}
    assert value(ours, "hana_requests_total", status="200", **tags) == 1
    assert value(ours, "hana_requests_total", status="401", **tags) == 0
    assert value(theirs, "hana_requests_total", status="200", **tags) == 0
    assert value(theirs, "hana_requests_total", status="401", **tags) == 1
    assert value(theirs, "hana_requests_total", route="/metrics", method="GET", status="401") == 1
