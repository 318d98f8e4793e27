"""The shared port's door: the DNS-rebinding guard on Host, CORS for local and configured origins
(others refused), and the URL a bound port is published under. More in test_access.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.shared_port import bind_shared_port, is_local_host, make_shared_port_app, url_for


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 11434, "http://127.0.0.1:11434"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),
        ("", 8080, "http://127.0.0.1:8080"),
        ("::", 8080, "http://127.0.0.1:8080"),
        ("::1", 8080, "http://[::1]:8080"),
        ("localhost", 1, "http://localhost:1"),
        ("10.1.2.3", 11434, "http://10.1.2.3:11434"),
    ],
)
def test_url_for(host: str, port: int, url: str) -> None:
    assert url_for(host, port) == url


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost:11434", True),
        ("127.0.0.1", True),
        ("[::1]:11434", True),
        ("api.localhost", True),
        ("192.168.1.20:11434", True),
        ("0.0.0.0:11434", True),
        ("attacker.example.com", False),
        ("8.8.8.8:11434", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


@pytest.fixture
async def shared_port(tmp_path: Path) -> AsyncIterator[str]:
    """A loopback shared port with one extra allowed origin; the service is never started."""
    settings = HanaSettings(
        models_dir=str(tmp_path / "models"),
        host="127.0.0.1",
        port=0,
        origins=["https://app.example"],
    )
    app = make_shared_port_app(HanaService(settings), settings)
    server, port = bind_shared_port(app, "127.0.0.1", 0, fallback=False)
    yield url_for("127.0.0.1", port)
    server.stop()
    await server.close_all_connections()


async def test_a_foreign_host_header_is_refused(shared_port: str) -> None:
    async with httpx.AsyncClient(base_url=shared_port) as client:
        assert (await client.get("/")).text == "Ollama is running"
        refused = await client.get("/", headers={"Host": "attacker.example.com"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("vscode-webview://abc", True),
        ("https://app.example", True),  # configured
        ("https://attacker.example.com", False),
    ],
)
async def test_cors_answers_local_and_configured_origins(
    shared_port: str, origin: str, allowed: bool
) -> None:
    async with httpx.AsyncClient(base_url=shared_port) as client:
        answer = await client.get("/", headers={"Origin": origin})
        preflight = await client.options("/api/tags", headers={"Origin": origin})
    if not allowed:  # refused before any work, as Ollama's CORS middleware does
        assert answer.status_code == preflight.status_code == 403
        assert "Access-Control-Allow-Origin" not in answer.headers
        return
    assert answer.headers.get("Access-Control-Allow-Origin") == origin
    assert preflight.status_code == 204
    assert preflight.headers.get("Access-Control-Allow-Origin") == origin
