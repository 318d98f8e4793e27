"""Who may call the shared port: foreign origins refused before any work, preflights answered as
Ollama answers them, the optional API key on every route (also through the official clients),
and the refusal to serve the network without a key."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from hana_server.access import (
    PREFLIGHT_HEADERS,
    UnsafeBind,
    check_bind,
    key_matches,
    origin_allowed,
)
from hana_server.api.routes import handler_classes
from hana_server.config import HanaSettings
from hana_server.service import HanaService
from hana_server.shared_port import make_shared_port_app
from scripted_server import ScriptedServer
from tornado import web

from hana_client import HanaClient
from hana_protocol.errors import HanaError

KEY = "s3cret-key"
EVIL = "https://evil.example"


def _authorize(server: ScriptedServer, key: str = KEY) -> ScriptedServer:
    server.http.headers["Authorization"] = f"Bearer {key}"
    return server


def _names(server: ScriptedServer) -> list[str]:
    return sorted(m.name.display for m in server.service.store.list())


# ------------------------------------------------------------------------------------ origin


def test_cross_site_writes_are_refused_before_any_work(scripted_server: ScriptedServer) -> None:
    """A page's "simple" requests (text/plain, foreign Origin) change nothing and load nothing."""
    server = scripted_server
    server.create_tiny("tiny")
    payload = b"not a model"
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    simple = {"Origin": EVIL, "Content-Type": "text/plain"}
    attempts = [
        ("POST", "/api/copy", {"source": "tiny", "destination": "stolen"}),
        ("DELETE", "/api/delete", {"model": "tiny"}),
        ("POST", "/api/create", {"model": "evil", "from": "tiny", "stream": False}),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}),
        ("POST", "/v1/chat/completions", {"model": "tiny", "messages": []}),
    ]
    for method, path, body in attempts:
        answer = server.http.request(method, path, content=json.dumps(body), headers=simple)
        assert answer.status_code == 403, (path, answer.text)
        assert "origin not allowed" in answer.json()["error"]
        assert "Access-Control-Allow-Origin" not in answer.headers
    # Own connection: the server closes it after refusing a body it did not read.
    upload = httpx.post(f"{server.url}/api/blobs/{digest}", content=payload, headers=simple)
    assert upload.status_code == 403

    assert _names(server) == ["tiny:latest"]
    assert not server.service.store.has_blob(digest)
    assert list((server.service.store.root / "blobs").glob("*tmp*")) == []
    assert server.launcher.launched == []  # no generation started, no model loaded
    # The same requests from an allowed origin do work (the refusal was the Origin's doing).
    allowed = {"Origin": "http://localhost:8888", "Content-Type": "text/plain"}
    copied = server.http.post("/api/copy", content=json.dumps(attempts[0][2]), headers=allowed)
    assert copied.status_code == 200
    assert copied.headers["Access-Control-Allow-Origin"] == "http://localhost:8888"
    assert _names(server) == ["stolen:latest", "tiny:latest"]


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://localhost", "127.0.0.1:11434", True),
        ("https://127.0.0.1:8888", "127.0.0.1:11434", True),
        ("http://0.0.0.0:3000", "127.0.0.1:11434", True),
        ("app://obsidian.md", "127.0.0.1:11434", True),
        ("vscode-webview://1234", "127.0.0.1:11434", True),
        ("http://192.168.1.5:11434", "192.168.1.5:11434", True),  # same origin
        ("https://app.example", "127.0.0.1:11434", True),  # configured below
        ("https://app.example.evil", "127.0.0.1:11434", False),
        ("http://localhost.evil.example", "127.0.0.1:11434", False),
        ("null", "127.0.0.1:11434", False),
        (EVIL, "127.0.0.1:11434", False),
    ],
)
def test_origin_allow_list(origin: str, host: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, ["https://app.example"]) is allowed


def test_preflight_as_ollama_answers_it(start_scripted_server: Callable[..., Any]) -> None:
    server = start_scripted_server(api_key=KEY, origins=["https://app.example"])
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = server.http.options("/api/chat", headers={"Origin": "https://app.example", **asks})
    assert ok.status_code == 204  # no key needed: browsers send none on a preflight
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    for name, value in PREFLIGHT_HEADERS.items():
        assert ok.headers[name] == value
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"].split(",")
    refused = server.http.options("/api/chat", headers={"Origin": EVIL, **asks})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    # The real request after the preflight needs the key, and its 401 is readable by the page.
    denied = server.http.post("/api/tags", headers={"Origin": "https://app.example"})
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://app.example"


# ------------------------------------------------------------------------------------ API key


def _route_requests() -> list[tuple[str, str]]:
    """(method, concrete path) for every verb of every route in the route table."""
    requests = []
    for pattern, handler in handler_classes():
        path = (
            pattern.replace("/?", "/")
            .replace("([^/]+)", "sha256:" + "0" * 64)
            .replace("(.+)", "tiny")
        )
        for verb in ("get", "head", "post", "delete"):
            if getattr(handler, verb) is not web.RequestHandler._unimplemented_method:
                requests.append((verb.upper(), path))
    return requests


ROUTES = _route_requests()


def test_route_table_is_covered() -> None:
    paths = {path for _, path in ROUTES}
    assert len(paths) == len(handler_classes())  # every route has at least one verb here
    assert ("DELETE", "/api/delete") in ROUTES and ("GET", "/metrics") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_needs_the_key(
    start_scripted_server: Callable[..., Any], method: str, path: str
) -> None:
    server = _authorize(start_scripted_server(api_key=KEY))
    server.create_tiny("tiny")
    body = json.dumps({"model": "tiny", "source": "tiny", "destination": "x", "prompt": "hi"})
    before = _names(server)

    def status(headers: dict[str, str]) -> tuple[int, dict[str, Any] | None, httpx.Headers]:
        content = body if method in ("POST", "DELETE") else None
        with (
            httpx.Client(base_url=server.url, trust_env=False) as client,
            client.stream(method, path, content=content, headers=headers, timeout=30) as answer,
        ):
            if answer.status_code >= 400 and method != "HEAD":
                return answer.status_code, json.loads(answer.read()), answer.headers
            return answer.status_code, None, answer.headers  # a stream may go on: leave

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        code, error, answer_headers = status(headers)
        assert code == 401, (headers, code)
        if error is not None:
            assert set(error) == {"error"} and error["error"].startswith("unauthorized")
        assert answer_headers["WWW-Authenticate"].startswith("Bearer")
    assert _names(server) == before  # nothing happened on a refusal
    code, _, _ = status({"Authorization": f"Bearer {KEY}"})
    assert code not in (401, 403)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        (f"Bearer  {KEY} ", True),
        (f"Basic {KEY}", False),
        (f"token {KEY}", False),
        ("Bearer", False),
        ("Bearer s3cret-ke", False),
        (None, False),
    ],
)
def test_key_matching(header: str | None, ok: bool) -> None:
    assert key_matches(header, KEY) is ok


def test_official_clients_send_the_key(
    start_scripted_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _authorize(start_scripted_server(api_key=KEY))
    server.create_tiny("tiny")
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)  # what the ollama client reads
    with ollama.Client(host=server.url) as client:
        assert client.generate(model="tiny", prompt="hi").response == "Hello, world"
    monkeypatch.setenv("OLLAMA_API_KEY", "wrong")
    with ollama.Client(host=server.url) as client, pytest.raises(ollama.ResponseError) as refused:
        client.list()
    assert refused.value.status_code == 401 and "unauthorized" in refused.value.error

    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["tiny:latest"]
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


@pytest.mark.parametrize("variable", ["HANA_API_KEY", "OLLAMA_API_KEY"])
def test_hana_client_sends_the_key_from_the_environment(
    start_scripted_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    server = _authorize(start_scripted_server(api_key=KEY))
    server.create_tiny("tiny")
    monkeypatch.delenv("HANA_API_KEY", raising=False)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with HanaClient(url=server.url) as client, pytest.raises(HanaError) as refused:
        client.models()
    assert refused.value.status == 401
    monkeypatch.setenv(variable, KEY)
    if variable == "OLLAMA_API_KEY":
        monkeypatch.setenv("HANA_API_KEY", "")  # unset-but-empty does not hide OLLAMA_API_KEY
    with HanaClient(url=server.url) as client:
        assert [m["name"] for m in client.models()] == ["tiny:latest"]


def _hana(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the `hana` command with these environment variables added."""
    return subprocess.run(
        [sys.executable, "-m", "hana_server.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_sends_the_key(start_scripted_server: Callable[..., Any]) -> None:
    server = _authorize(start_scripted_server(api_key=KEY))
    server.create_tiny("tiny")
    listed = _hana("list", HANA_URL=server.url, HANA_API_KEY=KEY)
    assert listed.returncode == 0, listed.stderr
    assert "tiny:latest" in listed.stdout
    refused = _hana("list", HANA_URL=server.url, HANA_API_KEY="wrong")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr


# ----------------------------------------------------------------------------- network binds


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_binds_need_nothing(host: str) -> None:
    assert check_bind(host, "", False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "myhost.example"])
def test_network_binds_need_a_key_or_an_explicit_opt_out(host: str) -> None:
    with pytest.raises(UnsafeBind, match="HANA_API_KEY"):
        check_bind(host, "", False)
    with_key = check_bind(host, KEY, False)
    assert with_key is not None and "reachable from other machines" in with_key
    opted_out = check_bind(host, "", True)
    assert opted_out is not None and "WITHOUT authentication" in opted_out


def test_wildcard_bind_is_refused_or_warned_before_listening(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The decision is made when the app is built, before any socket exists."""

    def app_for(**settings: Any) -> Any:
        config = HanaSettings(models_dir=str(tmp_path), host="0.0.0.0", port=0, **settings)
        return make_shared_port_app(HanaService(config), config)

    with pytest.raises(UnsafeBind):
        app_for()
    with caplog.at_level(logging.WARNING, logger="hana"):
        app = app_for(api_key=KEY)
    assert app.settings["hana_loopback"] is False  # like Ollama: no Host check off loopback
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)


def test_hana_serve_refuses_a_wildcard_bind_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HANA_API_KEY", raising=False)
    monkeypatch.delenv("HANA_ALLOW_UNAUTHENTICATED_NETWORK", raising=False)
    done = _hana(
        *("serve", "--host", "0.0.0.0", "--port", "0"),
        HANA_MODELS=str(tmp_path),
        HANA_REGISTER_DEFAULT_MODEL="0",
    )
    assert done.returncode == 1
    assert "refusing to serve 0.0.0.0 without an API key" in done.stderr
    assert "is listening" not in done.stderr


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANA_API_KEY", KEY)
    monkeypatch.setenv("HANA_ALLOW_UNAUTHENTICATED_NETWORK", "1")
    settings = HanaSettings()
    assert settings.api_key == KEY and settings.allow_unauthenticated_network is True
    monkeypatch.setenv("OLLAMA_API_KEY", "cloud-key")  # a client's key, never the server's
    monkeypatch.delenv("HANA_API_KEY")
    assert HanaSettings().api_key == ""


# ------------------------------------------------------------------- no server-side paths


def test_create_over_http_never_reads_a_path(scripted_server: ScriptedServer) -> None:
    """A missing file, a non-GGUF file, a directory and a real GGUF all get the same answer: a
    client learns nothing about the server user's files and imports none of them."""
    server = scripted_server
    server.create_tiny("base", seed=1)
    root = server.root
    (root / "notes.txt").write_text("secret")
    (root / "folder").mkdir()
    gguf = root / "tiny-1.gguf"  # written by create_tiny
    answers = set()
    for source in (root / "missing.gguf", root / "notes.txt", root / "folder", gguf, "./x.gguf"):
        for body in (
            {"model": "probe", "modelfile": f"FROM {source}\n", "stream": False},
            {"model": "probe", "modelfile": f"FROM {source}\n"},  # streamed
        ):
            answer = server.http.post("/api/create", json=body)
            answers.add((answer.status_code, answer.text))
    assert answers == {(400, "{\"error\": \"neither 'from' or 'files' was specified\"}")}
    assert _names(server) == ["base:latest"]
    # An installed model's name still works through the legacy field.
    made = server.http.post(
        "/api/create", json={"model": "child", "modelfile": "FROM base\nSYSTEM hi", "stream": False}
    )
    assert made.status_code == 200, made.text
    assert server.service.store.get("child").system == "hi"
