"""The shared port's transport limits: per-route body caps, the Host check before any body byte,
header and body-stall timeouts, the connection cap, aborted uploads, Ollama-shaped 404/405 and
an event stream that outlives its heartbeats. Raw sockets where a client misbehaves."""

from __future__ import annotations

import gc
import hashlib
import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest
from hana_server.api.native import BlobHandler
from scripted_runner import Script
from scripted_server import ScriptedServer
from server_harness import wait_for

Start = Callable[..., ScriptedServer]


def connect(server: ScriptedServer) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def request_head(method: str, path: str, host: str = "127.0.0.1", **headers: str | int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def blob_temp_files(server: ScriptedServer) -> list[str]:
    blobs = server.service.store.blobs_dir
    return [p.name for p in blobs.iterdir() if p.name.startswith(".tmp-")] if blobs.exists() else []


# ------------------------------------------------------------------------------- body limits


def test_a_json_body_over_its_limit_is_refused_before_it_is_read(start: Start) -> None:
    server = start(max_request_body=1000)
    with connect(server) as sock:
        # Only the headers: a 413 must come back without the server waiting for 1 GB.
        sock.sendall(request_head("POST", "/api/generate", Content_Length=10**9))
        status, body = status_and_json(read_all(sock))
    assert status == 413
    assert "too large" in body["error"]
    small = server.http.post("/api/generate", json={"model": "missing", "prompt": "x"})
    assert small.status_code == 404  # under the limit the request goes through as usual


def test_a_blob_upload_has_its_own_limit_and_streams_past_the_json_limit(start: Start) -> None:
    server = start(max_request_body=1000, max_upload_size=200_000)
    data = bytes(range(256)) * 400  # 102,400 bytes: over the JSON limit, under the upload one
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert server.http.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert server.service.store.has_blob(digest)
    too_big = server.http.post(f"/api/blobs/{digest}", content=data * 2)
    assert too_big.status_code == 413
    assert blob_temp_files(server) == []


def test_the_host_check_answers_before_any_body_byte(start: Start) -> None:
    server = start()
    for path in ("/api/chat", "/api/blobs/sha256:" + "0" * 64, "/no/such/route"):
        with connect(server) as sock:
            sock.sendall(request_head("POST", path, host="evil.example", Content_Length=10**9))
            response = read_all(sock)
        assert status_and_json(response) == (403, {"error": "host not allowed"}), path
        # The body is never read, so the connection closes: the client is told so.
        assert b"\r\nConnection: close\r\n" in response.partition(b"\r\n\r\n")[0]
    assert blob_temp_files(server) == []


# ---------------------------------------------------------------------------------- timeouts


def test_a_stalled_body_is_cut_off(start: Start) -> None:
    server = start(body_idle_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(request_head("POST", "/api/generate", Content_Length=100) + b'{"model":')
        started = time.monotonic()
        assert read_all(sock) == b""  # closed: nothing can be answered to a half request
    assert time.monotonic() - started < 8


def test_half_sent_headers_are_cut_off(start: Start) -> None:
    server = start(header_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert read_all(sock) == b""


def test_connections_over_the_cap_get_503(start: Start) -> None:
    server = start(max_connections=3)
    idle = [connect(server) for _ in range(3)]
    try:
        wait_for(lambda: len(server_connections(server)) == 3)
        with connect(server) as extra:
            extra.sendall(request_head("GET", "/api/version"))
            status, body = status_and_json(read_all(extra))
        assert status == 503 and "busy" in body["error"]
    finally:
        for sock in idle:
            sock.close()
    # Once they are gone the port serves again.
    wait_for(lambda: server.http.get("/api/version").status_code == 200)


def server_connections(server: ScriptedServer) -> set:
    return server.http_server._connections  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------- aborted uploads


def live_blob_handlers() -> list[BlobHandler]:
    gc.collect()
    # type(), not isinstance(): a dead weak proxy among gc's objects raises on __class__
    return [o for o in gc.get_objects() if issubclass(type(o), BlobHandler)]


def test_an_aborted_upload_leaves_no_file_and_no_handler(start: Start) -> None:
    server = start()
    digest = "sha256:" + "ab" * 32
    with connect(server) as sock:
        sock.sendall(request_head("POST", f"/api/blobs/{digest}", Content_Length=10**8))
        sock.sendall(b"x" * 300_000)
        wait_for(lambda: blob_temp_files(server))  # the upload is being written to disk
        assert live_blob_handlers()
    # the client left mid-upload
    wait_for(lambda: not blob_temp_files(server), timeout=5)
    wait_for(lambda: not live_blob_handlers(), timeout=5)
    assert not server.service.store.has_blob(digest)


# ---------------------------------------------------------------------------- 404 and 405


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/nope", 404, "404 page not found"),
        ("POST", "/api/generate/extra", 404, "404 page not found"),
        ("DELETE", "/v2/models", 404, "404 page not found"),
        ("GET", "/api/generate", 405, "405 method not allowed"),
        ("POST", "/api/tags", 405, "405 method not allowed"),
        ("PATCH", "/api/chat", 405, "405 method not allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_ollama_json(
    scripted_server: ScriptedServer, method: str, path: str, status: int, message: str
) -> None:
    response = scripted_server.http.request(method, path, content=b"{}")
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": message}


# ------------------------------------------------------------------------------ event stream


def test_the_event_stream_stays_open_across_heartbeats(start: Start) -> None:
    server = start(events_heartbeat=0.05)
    server.create_tiny("tiny")
    server.script("tiny", Script(chunks=["hi"]))
    heartbeats = 0
    with (
        httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client,
        client.stream("GET", "/api/hana/events") as response,
    ):
        lines = response.iter_lines()
        for line in lines:
            if line == ": keep-alive":
                heartbeats += 1
                if heartbeats == 5:
                    break
        # Still subscribed after five heartbeats: a model load arrives as events.
        server.http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        states = []
        for line in lines:
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                states += [m["state"] for m in event.get("models", [])]
                if "ready" in states:
                    break
    assert heartbeats == 5 and "ready" in states


@pytest.fixture
def start(start_scripted_server: Start) -> Start:
    return start_scripted_server
