"""HanaClient against a real `hana serve`: discovery, streaming, errors, cancellation, the
embedded child server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from kernel_side import MODEL_A, in_flight
from server_harness import HanaServerProcess, free_port, wait_for

import hana_client.discovery as discovery
from hana_client import HanaClient
from hana_protocol.errors import HanaError, ModelNotFound, ServerUnreachable
from hana_protocol.hosts import normalize_url

LONG = {"num_predict": 100_000, "temperature": 0}


@pytest.fixture
def client(hana: HanaServerProcess) -> Iterator[HanaClient]:
    made = HanaClient(url=hana.url)
    yield made
    made.close()


def test_discovery_order(hana: HanaServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.delenv("HANA_HOST", raising=False)
    monkeypatch.setenv("HANA_URL", hana.url)
    monkeypatch.setenv("OLLAMA_HOST", closed)
    assert HanaClient(url=closed).base_url == normalize_url(closed)  # explicit wins, unchecked
    assert HanaClient().base_url == normalize_url(hana.url)
    monkeypatch.delenv("HANA_URL")
    monkeypatch.setenv("OLLAMA_HOST", hana.url)  # the shared port, used because it answers
    assert HanaClient(start_embedded=False).base_url == normalize_url(hana.url)
    monkeypatch.setenv("OLLAMA_HOST", closed)
    with pytest.raises(ServerUnreachable, match="no server answers"):
        _ = HanaClient(start_embedded=False).base_url


def test_embedded_server_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.delenv("HANA_URL", raising=False)
    monkeypatch.delenv("HANA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("HANA_MODELS", str(tmp_path))
    monkeypatch.setenv("HANA_REGISTER_DEFAULT_MODEL", "0")
    once = discovery.Once(discovery._start_embedded)
    monkeypatch.setattr(discovery, "_embedded", once)
    client = HanaClient()
    try:
        assert client.models() == []
        assert once.value is not None
        assert client.base_url == normalize_url(once.value.url)
    finally:
        client.close()
        if once.value is not None:
            once.value.stop()


def test_stream_then_collect(client: HanaClient) -> None:
    chunks = list(client.stream_generate(MODEL_A, "Hello", options={"num_predict": 12}))
    assert chunks[-1]["done"] is True and all(not c["done"] for c in chunks[:-1])
    assert "".join(c["response"] for c in chunks)
    answer = client.generate(MODEL_A, "Hello", options={"num_predict": 12})
    assert answer.eval_count == 12 and answer.done_reason == "length"
    assert answer.tokens_per_second and answer.tokens_per_second > 0


def test_chat_answer_is_a_message(client: HanaClient) -> None:
    answer = client.chat(MODEL_A, [{"role": "user", "content": "Hi"}], options={"num_predict": 5})
    assert answer.message == {"role": "assistant", "content": answer.text}
    assert answer.eval_count == 5


def test_logprobs_and_context_come_back_on_the_answer(client: HanaClient) -> None:
    greedy = {"num_predict": 6, "temperature": 0}
    first = client.generate(MODEL_A, "Hello", options=greedy, logprobs=True, top_logprobs=2)
    assert first.done_reason == "length" and len(first.logprobs) == first.eval_count == 6
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in first.logprobs)
    assert first.context and all(isinstance(token, int) for token in first.context)
    follow = client.generate(MODEL_A, " and then", options=greedy, context=first.context)
    assert follow.prompt_eval_count > len(first.context)  # the earlier exchange came first
    assert follow.logprobs == [] and follow.context
    chat = client.chat(MODEL_A, [{"role": "user", "content": "Hi"}], options=greedy, logprobs=True)
    assert len(chat.logprobs) == chat.eval_count and chat.context is None


def test_typed_errors(client: HanaClient) -> None:
    with pytest.raises(ModelNotFound) as not_found:
        client.generate("nope:1", "hi")
    assert not_found.value.status == 404
    assert str(not_found.value) == "model 'nope:1' not found"
    with pytest.raises(HanaError) as bad:
        client.generate(MODEL_A, "hi", format="yaml")
    assert bad.value.status == 400
    unreachable = HanaClient(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServerUnreachable, match="cannot reach the hana server"):
        unreachable.models()
    unreachable.close()


async def test_async_api_in_the_callers_loop(client: HanaClient) -> None:
    models = await client.async_models()
    assert MODEL_A in [m["name"] for m in models]
    pieces = [
        chunk["message"]["content"]
        async for chunk in client.async_stream_chat(
            MODEL_A, [{"role": "user", "content": "Hi"}], options={"num_predict": 4}
        )
    ]
    assert len(pieces) >= 4
    await client.async_close()


def test_leaving_a_stream_early_frees_the_server(
    hana: HanaServerProcess, client: HanaClient
) -> None:
    for _chunk in client.stream_generate(MODEL_A, "Go on", options=LONG):
        assert in_flight(hana) == 1
        break
    wait_for(lambda: in_flight(hana) == 0, timeout=5)


def test_interrupt_cancels_a_blocking_call(hana: HanaServerProcess, client: HanaClient) -> None:
    client.generate(MODEL_A, "", keep_alive="5m")  # loaded, so the request starts at once
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.generate(MODEL_A, "Go on", options=LONG)
    timer.join()
    assert time.monotonic() - started < 10
    wait_for(lambda: in_flight(hana) == 0, timeout=5)
