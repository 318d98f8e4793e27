"""Logprobs, `context`, context shift and `suffix` through `hana serve` on real tiny runners, with
the official `ollama` and `openai` clients; logprobs are checked against llama-cpp-python's own
logits for the same tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import ollama
import openai
import pytest
from server_harness import HanaServerProcess
from tiny_gguf import write_tiny_gguf

GREEDY = {"temperature": 0}
FIM_TEMPLATE = "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"


@pytest.fixture(scope="module")
def models(server: HanaServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`plain` ({{ .Prompt }}), `fim` (a template with .Suffix) and `small` (num_ctx 64), all on
    one tiny GGUF, whose path is returned."""
    path = write_tiny_gguf(tmp_path_factory.mktemp("lp") / "lp.gguf", seed=11)
    server.create_model("plain", path, template="{{ .Prompt }}")
    server.create_model("fim", path, template=FIM_TEMPLATE)
    small = write_tiny_gguf(tmp_path_factory.mktemp("lp") / "small.gguf", seed=12)
    server.create_model("small", small, template="{{ .Prompt }}", parameters={"num_ctx": 64})
    return path


@pytest.fixture(scope="module")
def client(server: HanaServerProcess, models: Path) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as client:
        yield client


def log_softmax_rows(model_path: Path, tokens: list[int], first: int) -> np.ndarray:
    """llama-cpp-python's logits for `tokens`, log-softmaxed here, from row `first` on."""
    llama = llama_cpp.Llama(str(model_path), n_ctx=512, logits_all=True, verbose=False)
    try:
        llama.eval(tokens)
        rows = np.array(llama.scores[: llama.n_tokens], dtype=np.float64)[first:]
    finally:
        llama.close()
    peak = rows.max(axis=1, keepdims=True)
    return rows - peak - np.log(np.exp(rows - peak).sum(axis=1, keepdims=True))


def entries_of(parts: list[Any]) -> list[Any]:
    return [entry for part in parts for entry in (part.logprobs or [])]


def test_ollama_client_logprobs_match_llama_cpp(client: ollama.Client, models: Path) -> None:
    prompt = "Logprobs, please"
    options = {**GREEDY, "num_predict": 10}
    answer = client.generate("plain", prompt, options=options, logprobs=True, top_logprobs=3)
    assert answer.context is not None and answer.logprobs is not None
    assert len(answer.logprobs) == 10
    # context = the prompt's tokens (without BOS) and the answer's: evaluate BOS + all but last.
    prompt_length = len(answer.context) - 10
    rows = log_softmax_rows(models, [1, *answer.context[:-1]], prompt_length)
    for row, token, entry in zip(
        rows, answer.context[prompt_length:], answer.logprobs, strict=True
    ):
        assert entry.logprob == pytest.approx(row[token], abs=1e-2)
        best = np.argsort(-row)[:3]
        assert [alt.logprob for alt in entry.top_logprobs] == pytest.approx(row[best], abs=1e-2)
        assert entry.top_logprobs[0].token == entry.token

    # The same prompt through chat (template {{ .Prompt }}): the same tokens, streamed or not.
    messages = [{"role": "user", "content": prompt}]
    reply = client.chat("plain", messages, options=options, logprobs=True, top_logprobs=3)
    assert [e.token for e in reply.logprobs] == [e.token for e in answer.logprobs]
    assert [e.logprob for e in reply.logprobs] == pytest.approx(
        [e.logprob for e in answer.logprobs], abs=1e-4
    )
    streamed = list(
        client.chat("plain", messages, options=options, logprobs=True, top_logprobs=3, stream=True)
    )
    assert [e.token for e in entries_of(streamed)] == [e.token for e in reply.logprobs]
    assert streamed[-1].done and not streamed[-1].logprobs
    plain = client.chat("plain", messages, options=options)
    assert plain.logprobs is None and plain.message.content == reply.message.content


def test_openai_client_logprobs(server: HanaServerProcess, client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 6}
    native = client.chat(
        "plain",
        [{"role": "user", "content": "abc"}],
        options=options,
        logprobs=True,
        top_logprobs=2,
    )
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="none") as oai:
        chat = oai.chat.completions.create(
            model="plain",
            messages=[{"role": "user", "content": "abc"}],
            temperature=0,
            max_tokens=6,
            logprobs=True,
            top_logprobs=2,
        )
        content = chat.choices[0].logprobs.content
        assert [e.token for e in content] == [e.token for e in native.logprobs]
        assert [e.logprob for e in content] == pytest.approx([e.logprob for e in native.logprobs])
        assert all(len(e.top_logprobs) == 2 for e in content)
        stream = oai.chat.completions.create(
            model="plain",
            messages=[{"role": "user", "content": "abc"}],
            temperature=0,
            max_tokens=6,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
        streamed = [
            e
            for chunk in stream
            if chunk.choices and chunk.choices[0].logprobs
            for e in chunk.choices[0].logprobs.content
        ]
        assert [e.token for e in streamed] == [e.token for e in content]
        plain = oai.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "abc"}], max_tokens=3
        )
        assert plain.choices[0].logprobs is None

        text = oai.completions.create(
            model="plain", prompt="abc", temperature=0, max_tokens=6, logprobs=2
        )
        found = text.choices[0].logprobs
        assert found.token_logprobs == pytest.approx([e.logprob for e in native.logprobs])
        assert all(len(top) <= 2 for top in found.top_logprobs)
        assert found.text_offset[0] == 0


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/api/generate",
            {"prompt": "x", "top_logprobs": 21},
            "top_logprobs must be between 0 and 20",
        ),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": -1},
            "top_logprobs must be between 0 and 20",
        ),
        ("/api/generate", {"prompt": "x", "context": [1, "2"]}, "context"),
        ("/api/generate", {"prompt": "x", "context": [1.5]}, "context"),
        ("/api/generate", {"prompt": "x", "context": [3, 99999]}, "outside the vocabulary"),
        ("/api/generate", {"prompt": "x", "context": [-1]}, "outside the vocabulary"),
        (
            "/api/generate",
            {"prompt": "x", "raw": True, "context": [3]},
            "raw mode does not support template, system, or context",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 25},
            "top_logprobs must be between 0 and 20",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "logprobs": 30},
            "top_logprobs must be between 0 and 20",
        ),
    ],
)
def test_bad_logprobs_and_context_are_400s(
    server: HanaServerProcess, models: Path, path: str, body: dict[str, Any], message: str
) -> None:
    response = server.http.post(path, json={"model": "plain", "stream": False, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in (error["message"] if isinstance(error, dict) else error)
    ok = server.http.post(
        "/api/generate",
        json={"model": "plain", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
    )
    assert ok.status_code == 200 and ok.json()["eval_count"] == 2


def test_context_round_trip(client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 5}
    first = client.generate("plain", "The first part", options=options)
    assert first.context and len(first.context) > 5
    second = client.generate("plain", " and more", context=first.context, options=options)
    assert second.context[: len(first.context)] == first.context
    assert second.prompt_eval_count > len(first.context)
    again = client.generate("plain", " and more", context=first.context, options=options)
    assert again.response == second.response
    # The streamed answer carries the context on its final chunk only.
    parts = list(client.generate("plain", "x", options=options, stream=True))
    assert parts[-1].context and not any(p.context for p in parts[:-1])
    raw = client.generate("plain", "x", options=options, raw=True)
    assert raw.context is None


def test_suffix_only_where_the_template_supports_it(
    server: HanaServerProcess, client: ollama.Client, models: Path
) -> None:
    refused = server.http.post(
        "/api/generate", json={"model": "plain", "prompt": "def f(", "suffix": "return x"}
    )
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "registry.ollama.ai/library/plain:latest does not support insert"
    }
    v1 = server.http.post(
        "/v1/completions", json={"model": "plain", "prompt": "def f(", "suffix": "return x"}
    )
    assert v1.status_code == 400 and "does not support insert" in v1.json()["error"]["message"]

    assert "insert" in client.show("fim").capabilities
    assert "insert" not in client.show("plain").capabilities
    options = {**GREEDY, "num_predict": 4}
    answer = client.generate("fim", "def f(", suffix="return x", options=options)
    assert answer.eval_count == 4
    llama = llama_cpp.Llama(str(models), vocab_only=True, verbose=False)
    prompt_tokens = answer.context[: len(answer.context) - 4]
    rendered = llama.detokenize(prompt_tokens).decode()
    assert rendered.strip() == "<PRE> def f( <SUF>return x <MID>"
    loaded = client.generate("fim", "", suffix="return x")  # an empty prompt loads, as Ollama
    assert loaded.done_reason == "load"


def test_full_context_shifts_unless_shift_is_false(server: HanaServerProcess, models: Path) -> None:
    body = {"model": "small", "prompt": "go on", "stream": False}
    shifted = server.http.post(
        "/api/generate", json={**body, "options": {**GREEDY, "num_predict": 150}}
    ).json()
    assert (shifted["eval_count"], shifted["done_reason"]) == (150, "length")
    stopped = server.http.post(
        "/api/generate",
        json={**body, "shift": False, "options": {**GREEDY, "num_predict": 150}},
    ).json()
    assert stopped["done_reason"] == "length"
    assert stopped["eval_count"] < 64
    assert shifted["response"].startswith(stopped["response"][:30])


def test_logprobs_pass_the_reply_parsers(
    server: HanaServerProcess, client: ollama.Client, models: Path
) -> None:
    # A thinking model with tools: its parsers hold text back, the logprobs must still all come,
    # streamed and whole, the same as on a model without parsers.
    from family_templates import QWEN3

    server.create_model("thinks", models, template=QWEN3)
    messages = [{"role": "user", "content": "Logprobs, please"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    options = {**GREEDY, "num_predict": 12}
    plain = client.chat("plain", messages, options=options, logprobs=True)
    whole = client.chat("thinks", messages, options=options, logprobs=True, tools=tools)
    parts = list(
        client.chat("thinks", messages, options=options, logprobs=True, tools=tools, stream=True)
    )
    assert whole.eval_count == plain.eval_count == 12
    text = (whole.message.content or "") + (whole.message.thinking or "")
    # One entry per generated token, parsers or not (greedy near-ties on a random tiny model may
    # pick other tokens between runs, so the counts are compared, not the tokens).
    assert len(whole.logprobs) == len(entries_of(parts)) == len(plain.logprobs) >= 1
    assert len(text) <= len("".join(e.token for e in whole.logprobs))
