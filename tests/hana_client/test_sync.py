"""Sync twins are generated from the async methods: same parameters, same docstring; leaving or
interrupting a sync stream closes the server's stream."""

from __future__ import annotations

import inspect
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from kernel_side import MODEL_A, in_flight
from server_harness import HanaServerProcess, wait_for

from hana_client import HanaClient
from hana_client.sync import run_sync
from hana_jupyter.manager import ModelManager

LONG = {"num_predict": 100_000, "temperature": 0}


def _twins(cls: type) -> list[tuple[str, str]]:
    names = [name for name in vars(cls) if name.startswith("async_")]
    return [(name, name.removeprefix("async_")) for name in names if hasattr(cls, name[6:])]


# Written by hand: `close` closes the background loop's pool, not the caller's; the manager's
# `pull` / `create` call `progress` on the caller's thread, and `generate` / `chat` draw the bars
# of a pull-first there too.
HAND_WRITTEN = {HanaClient: {"close"}, ModelManager: {"pull", "create", "generate", "chat"}}


@pytest.mark.parametrize("cls", [HanaClient, ModelManager])
def test_twins_keep_signature_and_docstring(cls: type) -> None:
    twins = [(a, n) for a, n in _twins(cls) if n not in HAND_WRITTEN[cls]]
    assert len(twins) >= (18 if cls is HanaClient else 7)
    for async_name, name in twins:
        original, twin = getattr(cls, async_name), getattr(cls, name)
        assert twin.__wrapped__ is original, name
        ours, theirs = inspect.signature(twin), inspect.signature(original)
        assert list(ours.parameters.values()) == list(theirs.parameters.values()), name
        assert twin.__doc__ == original.__doc__, name
        assert twin.__name__ == name
        if inspect.isasyncgenfunction(original):
            assert theirs.return_annotation.startswith("AsyncIterator[")
            assert ours.return_annotation == theirs.return_annotation.replace("Async", "", 1)
        else:
            assert ours.return_annotation == theirs.return_annotation


def test_run_sync_refuses_plain_functions() -> None:
    with pytest.raises(TypeError, match="async def or async generator"):
        run_sync(len)


@pytest.fixture
def client(hana: HanaServerProcess) -> Iterator[HanaClient]:
    with HanaClient(url=hana.url) as made:
        yield made


def test_interrupting_a_sync_stream_closes_it(hana: HanaServerProcess, client: HanaClient) -> None:
    client.generate(MODEL_A, "", keep_alive="5m")  # loaded, so the stream starts at once
    chunks = 0
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        for _chunk in client.stream_generate(MODEL_A, "Go on", options=LONG):
            chunks += 1
            if chunks == 1:
                timer.start()
    timer.join()
    assert chunks > 1
    wait_for(lambda: in_flight(hana) == 0, timeout=5)


def test_leaving_the_event_stream_early(hana: HanaServerProcess, client: HanaClient) -> None:
    events = client.events()
    first = next(events)
    assert first["event"] == "state" and isinstance(first["models"], list)
    events.close()  # the generator's finally closes the HTTP stream on the background loop
    assert {"version", "models", "settings"} <= set(client.status())


async def test_async_context_manager_closes_its_pool(hana: HanaServerProcess) -> None:
    async with HanaClient(url=hana.url) as client:
        status = await client.async_status()
        assert status["url"] and await client.async_version()
        assert len(client._http_clients) == 1
    assert len(client._http_clients) == 0
