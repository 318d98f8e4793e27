"""Remote models on an OpenAI-compatible upstream: the real `python -m llama_cpp.server`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from remote_harness import LlamaCppServer, create_remote
from server_harness import HanaServerProcess, wait_for

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def remote(openai_upstream: LlamaCppServer, local: HanaServerProcess) -> str:
    response = create_remote(
        local,
        "oai",
        **{"from": "tiny-openai"},
        remote_host=openai_upstream.url + "/v1",
        remote_api="openai",
        remote_key_env="OPENAI_API_KEY",
        parameters={"temperature": 0, "seed": 1, "top_k": 1, "num_predict": 9},
    )
    assert response.status_code == 200, response.text
    return "oai:latest"


def direct(server: LlamaCppServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    base = {"temperature": 0, "seed": 1, "top_k": 1, "max_tokens": 9}
    response = httpx.post(
        server.url + path, json={**base, **body}, headers=server.headers, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.json()


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_listed_with_its_api(local: HanaServerProcess, remote: str) -> None:
    entry = next(m for m in local.http.get("/api/tags").json()["models"] if m["name"] == remote)
    assert entry["remote_model"] == "tiny-openai" and entry["remote_api"] == "openai"
    assert entry["remote_host"].endswith("/v1")


def test_chat_not_streaming_translates_text_and_usage(
    openai_upstream: LlamaCppServer, local: HanaServerProcess, remote: str
) -> None:
    via = local.http.post(
        "/api/chat", json={"model": remote, "messages": MESSAGES, "stream": False}
    )
    assert via.status_code == 200, via.text
    answer = via.json()
    expected = direct(openai_upstream, "/v1/chat/completions", {"messages": MESSAGES})
    assert answer["message"]["content"] == expected["choices"][0]["message"]["content"]
    assert answer["prompt_eval_count"] == expected["usage"]["prompt_tokens"]
    assert answer["eval_count"] == expected["usage"]["completion_tokens"] == 9
    assert answer["done_reason"] == "length"  # max_tokens ended it
    assert answer["total_duration"] > 0 and answer["remote_model"] == "tiny-openai"


def direct_stream(server: LlamaCppServer, body: dict[str, Any]) -> str:
    """The text llama_cpp.server streams (it drops a character split across two tokens, so a
    stream is compared with a stream)."""
    base = {"temperature": 0, "seed": 1, "top_k": 1, "max_tokens": 9, "stream": True}
    text = ""
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={**base, **body},
        headers=server.headers,
        timeout=120,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text


def test_chat_stream_matches_and_counts(
    openai_upstream: LlamaCppServer, local: HanaServerProcess, remote: str
) -> None:
    with local.http.stream("POST", "/api/chat", json={"model": remote, "messages": MESSAGES}) as r:
        assert r.status_code == 200
        chunks = ndjson(r)
    streamed = "".join(c["message"]["content"] for c in chunks)
    assert streamed == direct_stream(openai_upstream, {"messages": MESSAGES})
    final = chunks[-1]
    assert final["done"] and final["eval_count"] == 9 and final["done_reason"] == "length"
    assert final["eval_duration"] > 0 and final["prompt_eval_duration"] > 0
    assert all(c["model"] == remote and c["remote_host"] for c in chunks)


def test_generate_and_raw_prompt(
    openai_upstream: LlamaCppServer, local: HanaServerProcess, remote: str
) -> None:
    chat = local.http.post(
        "/api/chat",
        json={"model": remote, "messages": [{"role": "user", "content": "hey"}], "stream": False},
    ).json()
    generated = local.http.post(
        "/api/generate", json={"model": remote, "prompt": "hey", "stream": False}
    ).json()
    assert generated["response"] == chat["message"]["content"]  # a one-turn chat upstream
    raw = local.http.post(
        "/api/generate", json={"model": remote, "prompt": "abc", "raw": True, "stream": False}
    ).json()
    expected = direct(openai_upstream, "/v1/completions", {"prompt": "abc"})
    assert raw["response"] == expected["choices"][0]["text"]
    assert raw["eval_count"] == expected["usage"]["completion_tokens"]


def test_options_reach_the_upstream(
    openai_upstream: LlamaCppServer, local: HanaServerProcess, remote: str
) -> None:
    body = {"model": remote, "messages": MESSAGES, "stream": False}
    plain = local.http.post("/api/chat", json=body).json()["message"]["content"]
    short = local.http.post("/api/chat", json={**body, "options": {"num_predict": 4}}).json()
    expected = direct(
        openai_upstream, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4}
    )
    assert short["eval_count"] == expected["usage"]["completion_tokens"] < 9
    assert short["message"]["content"] == expected["choices"][0]["message"]["content"]
    stop = next(ch for ch in plain[2:] if ch.strip() and ch not in plain[:2])
    stopped = local.http.post("/api/chat", json={**body, "options": {"stop": [stop]}}).json()
    assert stopped["message"]["content"] == plain[: plain.index(stop)]
    assert stopped["done_reason"] == "stop"


def test_format_json_becomes_response_format(
    openai_upstream: LlamaCppServer, local: HanaServerProcess, remote: str
) -> None:
    body = {"model": remote, "messages": MESSAGES, "stream": False, "format": "json"}
    via = local.http.post("/api/chat", json={**body, "options": {"num_predict": 30}}).json()
    expected = direct(
        openai_upstream,
        "/v1/chat/completions",
        {"messages": MESSAGES, "max_tokens": 30, "response_format": {"type": "json_object"}},
    )
    content = via["message"]["content"]
    assert content == expected["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")


def test_key_errors_are_401(openai_upstream: LlamaCppServer, local: HanaServerProcess) -> None:
    host = openai_upstream.url + "/v1"
    for name, key_env in (("oai-nokey", None), ("oai-wrong", "WRONG_API_KEY")):
        fields = {"remote_key_env": key_env} if key_env else {}
        created = create_remote(
            local, name, **{"from": "t"}, remote_host=host, remote_api="openai", **fields
        )
        assert created.status_code == 200
        response = local.http.post("/api/chat", json={"model": name, "messages": MESSAGES})
        assert response.status_code == 401, response.text
        assert "refused the request" in response.json()["error"]


@pytest.fixture(scope="module")
def via_hana_v1(upstream: HanaServerProcess, local: HanaServerProcess) -> HanaServerProcess:
    """`oai-hana` and `oai-embed`: the upstream hana's own OpenAI-compatible `/v1` routes."""
    for name, model in (("oai-hana", "tiny"), ("oai-embed", "tiny-embed")):
        created = create_remote(
            local,
            name,
            **{"from": model},
            remote_host=upstream.url + "/v1",
            remote_api="openai",
            remote_key_env="UPSTREAM_API_KEY",
        )
        assert created.status_code == 200, created.text
    return upstream


def test_disconnect_stops_the_upstream(
    via_hana_v1: HanaServerProcess, local: HanaServerProcess
) -> None:
    # (llama_cpp.server cannot show this: a stream of a random tiny model often stalls inside it
    # on partial UTF-8 for tens of seconds, for a direct client as well.)
    # A raw prompt goes to `/v1/completions`: no chat template, so no template stop string can
    # end the tiny model's answer early (it never samples EOS).
    body = {
        "model": "oai-hana",
        "prompt": "count:",
        "raw": True,
        "options": {"num_predict": 30000, "temperature": 0},
    }
    with (
        httpx.Client(base_url=local.url, timeout=60) as client,
        client.stream("POST", "/api/generate", json=body) as response,
    ):
        stream = response.iter_lines()  # kept: a dropped iterator closes the response
        lines = [next(stream) for _ in range(5)]
        assert len(lines) == 5 and not json.loads(lines[-1])["done"]
        wait_for(lambda: busy(via_hana_v1) == 1)
    wait_for(lambda: busy(via_hana_v1) == 0)


def busy(server: HanaServerProcess) -> int:
    return sum(m["in_flight"] for m in server.ps())


def test_embed_through_openai_embeddings(
    via_hana_v1: HanaServerProcess, local: HanaServerProcess
) -> None:
    via = local.http.post("/api/embed", json={"model": "oai-embed", "input": ["a", "bc"]})
    assert via.status_code == 200, via.text
    expected = via_hana_v1.http.post(
        "/api/embed", json={"model": "tiny-embed", "input": ["a", "bc"]}
    ).json()
    got = via.json()
    assert len(got["embeddings"]) == 2
    for mine, theirs in zip(got["embeddings"], expected["embeddings"], strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)
    assert got["prompt_eval_count"] == expected["prompt_eval_count"]
