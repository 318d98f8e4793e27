"""The official `ollama` and `openai` Python clients work against `hana serve` as they are."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import openai
import pytest
from server_harness import HanaServerProcess


@pytest.fixture(scope="module")
def client(server: HanaServerProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url)
    yield client
    client.close()


def test_ollama_generate_streamed_and_not(client: ollama.Client) -> None:
    parts = list(
        client.generate(
            model="tiny", prompt="hi", stream=True, options={"num_predict": 8, "temperature": 0}
        )
    )
    assert parts[-1].done and parts[-1].eval_count == 8
    whole = client.generate(model="tiny", prompt="hi", options={"num_predict": 8, "temperature": 0})
    assert whole.response == "".join(p.response for p in parts)
    assert whole.done_reason == "length"


def test_ollama_chat(client: ollama.Client) -> None:
    reply = client.chat(
        model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 5}
    )
    assert reply.message.role == "assistant"
    assert reply.eval_count == 5
    streamed = list(
        client.chat(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            options={"num_predict": 5},
            stream=True,
        )
    )
    assert streamed[-1].done


def test_ollama_list_ps_show(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert "tiny:latest" in names
    client.generate(model="tiny", prompt="")  # load
    assert "tiny:latest" in [m.model for m in client.ps().models]
    shown = client.show("tiny")
    assert shown.details.family == "llama"
    assert shown.modelinfo["general.architecture"] == "llama"


def test_ollama_errors_are_response_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        client.generate(model="missing", prompt="hi")
    assert error.value.status_code == 404
    assert "not found" in error.value.error


def test_openai_chat_completions(server: HanaServerProcess) -> None:
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="hana")
    reply = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    assert reply.id.startswith("chatcmpl-")
    chunks = list(
        api.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    api.close()


def test_openai_completions_and_models(server: HanaServerProcess) -> None:
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="hana")
    done = api.completions.create(model="tiny", prompt="abc", max_tokens=4)
    assert done.object == "text_completion"
    assert done.usage is not None and done.usage.completion_tokens == 4
    ids = [m.id for m in api.models.list()]
    assert "tiny:latest" in ids
    assert api.models.retrieve("tiny").id == "tiny:latest"
    api.close()


def test_openai_errors_have_openai_shape(server: HanaServerProcess) -> None:
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="hana", max_retries=0)
    with pytest.raises(openai.NotFoundError) as error:
        api.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert "not found" in str(error.value)
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model="tiny", messages=[])
    api.close()
