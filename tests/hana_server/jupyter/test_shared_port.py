"""The shared loopback port of HanaApp: same service as the Jupyter routes, fallback, publishing."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from hana_server.extension import HanaApp


def test_shared_port_serves_the_same_service(
    run: Any, jp_fetch: Any, tiny_model: str, hana_app: HanaApp, jp_serverapp: Any
) -> None:
    url = hana_app.service.url
    assert url is not None and url.startswith("http://127.0.0.1:")
    assert os.environ["HANA_URL"] == url
    assert os.environ["OLLAMA_HOST"] == url.removeprefix("http://")

    async def use_ollama() -> tuple[Any, Any]:
        async with ollama.AsyncClient(host=url) as client:  # no token, like Ollama's port
            listed = await client.list()
            reply = await client.generate(model="tiny", prompt="hi", options={"num_predict": 4})
        return listed, reply

    listed, reply = run(use_ollama())
    assert [m.model for m in listed.models] == ["tiny:latest"]  # created via the Jupyter route
    assert reply.eval_count == 4
    # The runner loaded by the shared port is the one the Jupyter route reports.
    ps = json.loads(run(jp_fetch("hana", "api", "ps")).body)
    assert [m["name"] for m in ps["models"]] == ["tiny:latest"]

    info = json.loads((Path(jp_serverapp.runtime_dir) / f"hana-{os.getpid()}.json").read_text())
    assert info == {
        "url": url,
        "base_url": "/a%40b/hana/",
        "pid": os.getpid(),
        "version": info["version"],
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port someone else listens on, like a real Ollama on 11434."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def hana_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The test's settings (indirect parametrize); `port` is the taken one if the test uses it."""
    config: dict[str, Any] = dict(getattr(request, "param", {}))
    if "taken_port" in request.fixturenames:
        config["port"] = request.getfixturevalue("taken_port")
    return config


def test_port_taken_falls_back_and_publishes(
    taken_port: int, hana_app: HanaApp, jp_serverapp: Any, run: Any
) -> None:
    url = hana_app.service.url
    assert url is not None and not url.endswith(f":{taken_port}")

    async def version() -> int:
        async with httpx.AsyncClient() as client:
            return (await client.get(url + "/api/version")).status_code

    assert run(version()) == 200
    assert os.environ["HANA_URL"] == url
    runtime = Path(jp_serverapp.runtime_dir) / f"hana-{os.getpid()}.json"
    assert json.loads(runtime.read_text())["url"] == url


@pytest.mark.parametrize("hana_config", [{"port_fallback": False}], indirect=True)
def test_port_taken_without_fallback_fails_loudly(
    taken_port: int, jp_configurable_serverapp: Any
) -> None:
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        jp_configurable_serverapp()
    assert "HANA_URL" not in os.environ


@pytest.mark.parametrize("hana_config", [{"share_port": False}], indirect=True)
def test_without_shared_port_kernels_get_the_jupyter_route(
    hana_app: HanaApp, jp_serverapp: Any
) -> None:
    assert hana_app.service.url is None
    assert os.environ["HANA_URL"] == jp_serverapp.connection_url + "hana"
    assert os.environ["HANA_TOKEN"] == jp_serverapp.identity_provider.token
    assert "OLLAMA_HOST" not in os.environ


def test_shared_port_stays_on_loopback_whatever_ollama_host_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OLLAMA_HOST=0.0.0.0 is common for a real Ollama; hana's port has no auth: loopback."""
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:12345")
    app = HanaApp()
    assert (app.host, app.port) == ("127.0.0.1", 12345)
