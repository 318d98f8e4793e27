"""`POST /api/pull` against the loopback registry (tests/registry_server.py): real HTTP on both
sides, the real app on scripted runners (pulling never starts a runner)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hana_server.store.transfer import partial_paths
from registry_server import LoopbackRegistry, RegistryModel
from scripted_server import ScriptedServer


def pull(server: ScriptedServer, name: str, **body: Any) -> list[dict[str, Any]]:
    """Every line of a streamed pull."""
    with server.http.stream("POST", "/api/pull", json={"model": name, **body}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def tiny(registry: LoopbackRegistry) -> RegistryModel:
    return registry.models[("library", "tiny", "latest")]


def blob_files(server: ScriptedServer) -> list[str]:
    blobs = server.service.store.blobs_dir
    return sorted(p.name for p in blobs.iterdir()) if blobs.exists() else []


def wait_received(server: ScriptedServer, digest: str, n: int) -> None:
    """Wait until hana has taken `n` bytes of `digest` off the network."""

    def received() -> int:
        shared = server.service.pulls._downloads.get(digest)
        return shared.download.received if shared else 0

    wait_for(lambda: received() == n)


def wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_fresh_pull_streams_ollamas_progress_and_installs_every_layer(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    name = registry.name("tiny")
    model = tiny(registry)
    chunks = pull(scripted_server, name, insecure=True)
    statuses = [c["status"] for c in chunks]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [*model.layers, json.loads(model.manifest)["config"]]
    for layer in layers:
        events = [c for c in chunks if c.get("digest") == layer["digest"]]
        assert events, layer
        assert {e["status"] for e in events} == {f"pulling {layer['digest'][7:19]}"}
        assert events[-1]["total"] == layer["size"]
        assert events[-1]["completed"] == layer["size"]
    # The registry's manifest bytes are kept verbatim: the digest is the registry's.
    tags = scripted_server.http.get("/api/tags").json()["models"]
    assert [(m["name"], m["digest"]) for m in tags] == [(name, model.digest[7:])]
    shown = scripted_server.http.post("/api/show", json={"model": name}).json()
    assert shown["system"] == "You are tiny."
    assert shown["template"] == "{{ .System }} {{ .Prompt }}"
    assert shown["license"] == "MIT, for tests"
    assert "temperature" in shown["parameters"]
    weights = scripted_server.service.store.get(name).model_path
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == model.blob("model").digest[7:]
    # The token challenge was answered; the CDN (another host) never saw the token.
    assert any(r["path"] == "/v2/token" for r in registry.requests)
    cdn = [r for r in registry.requests if r["server"] == "cdn"]
    assert cdn and all(r["authorization"] is None for r in cdn)
    assert all(r["range"] and r["range"].startswith("bytes=") for r in cdn)
    assert not [f for f in blob_files(scripted_server) if not f.startswith("sha256-")]


def test_pulling_a_present_model_downloads_nothing(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    name = registry.name("tiny")
    pull(scripted_server, name, insecure=True)
    registry.reset_counts()
    chunks = pull(scripted_server, name, insecure=True)
    assert chunks[-1] == {"status": "success"}
    assert registry.served() == 0
    layer_events = [c for c in chunks if "digest" in c]
    assert len(layer_events) == len(tiny(registry).blobs)  # one full event per layer
    assert all(c["completed"] == c["total"] for c in layer_events)
    answer = scripted_server.http.post(
        "/api/pull", json={"model": name, "insecure": True, "stream": False}
    )
    assert answer.status_code == 200
    assert answer.json() == {"status": "success"}
    assert registry.served() == 0


def test_a_dropped_connection_resumes_at_the_saved_offset(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    part = 100_000
    scripted_server.service.pulls.min_part = part  # several parts, in parallel
    weights = tiny(registry).blob("model")
    registry.faults.drop_after[weights.digest] = 60_000
    chunks = pull(scripted_server, registry.name("tiny"), insecure=True)
    assert chunks[-1] == {"status": "success"}
    assert registry.served(weights.digest) <= weights.size + part
    ranges = [
        r["range"]
        for r in registry.requests
        if r["server"] == "cdn" and weights.digest[7:] in r["path"]
    ]
    starts = sorted(int(r.removeprefix("bytes=").split("-")[0]) for r in ranges)
    # Every part from its offset, plus one retry that starts where the dropped one stopped.
    assert len(ranges) == -(-weights.size // part) + 1
    assert any(s % part != 0 for s in starts)
    assert scripted_server.service.store.has_blob(weights.digest)


def test_a_corrupt_blob_is_an_error_and_nothing_is_stored(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    weights = tiny(registry).blob("model")
    registry.faults.corrupt.add(weights.digest)
    chunks = pull(scripted_server, registry.name("tiny"), insecure=True)
    error = chunks[-1]["error"]
    assert error.startswith(
        f"digest mismatch, file must be downloaded again: want {weights.digest}, got sha256:"
    )
    assert not any(
        f.startswith("sha256-" + weights.digest[7:]) for f in blob_files(scripted_server)
    )
    assert not any(f.startswith(".partial") for f in blob_files(scripted_server))
    assert scripted_server.http.get("/api/tags").json()["models"] == []


def test_an_unknown_model_gets_ollamas_error(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    name = registry.name("nonexistent")
    chunks = pull(scripted_server, name, insecure=True)
    assert chunks == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    answer = scripted_server.http.post(
        "/api/pull", json={"model": name, "insecure": True, "stream": False}
    )
    assert answer.status_code == 500
    assert answer.json() == {"error": "pull model manifest: file does not exist"}
    bad = scripted_server.http.post("/api/pull", json={"model": "a/b/c/d:e"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid model name"})
    empty = scripted_server.http.post("/api/pull", content=b"")
    assert empty.status_code == 400


def test_without_insecure_an_http_registry_is_asked_over_https(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    chunks = pull(scripted_server, registry.name("tiny"))
    assert chunks[-1]["error"].startswith(
        f'pull model manifest: Get "https://{registry.host}/v2/library/tiny/manifests/latest"'
    )
    assert registry.requests == []  # a TLS hello is not an HTTP request
    assert pull(scripted_server, registry.name("tiny"), insecure=True)[-1]["status"] == "success"


def test_a_plain_registry_that_serves_blobs_itself_works(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    registry.faults.redirect = False  # like `registry:2`: 200 with the bytes, no CDN
    assert pull(scripted_server, registry.name("tiny"), insecure=True)[-1]["status"] == "success"
    assert not [r for r in registry.requests if r["server"] == "cdn"]


def test_concurrent_pulls_of_one_model_share_one_download(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    weights = tiny(registry).blob("model")
    registry.hold(weights.digest, 50_000)
    results: list[list[dict[str, Any]]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                pull(scripted_server, registry.name("tiny"), insecure=True)
            )
        )
        for _ in range(3)
    ]
    threads[0].start()
    assert registry.wait_held()
    for thread in threads[1:]:
        thread.start()
    # The other pulls reach the held layer and wait on the same transfer.
    wait_for(lambda: scripted_server.service.pulls._downloads[weights.digest].waiters == 3)
    registry.release()
    for thread in threads:
        thread.join(30)
    assert [r[-1] for r in results] == [{"status": "success"}] * 3
    assert registry.served(weights.digest) == weights.size
    cdn_gets = [
        r for r in registry.requests if r["server"] == "cdn" and weights.digest[7:] in r["path"]
    ]
    assert len(cdn_gets) == 1


def test_cancelling_a_pull_keeps_the_partial_data_for_a_resume(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    weights = tiny(registry).blob("model")
    registry.hold(weights.digest, 150_000)
    client = httpx.Client(base_url=scripted_server.url, trust_env=False, timeout=30)
    with client.stream(
        "POST", "/api/pull", json={"model": registry.name("tiny"), "insecure": True}
    ) as response:
        assert registry.wait_held()
        wait_received(scripted_server, weights.digest, 150_000)
    client.close()  # the client leaves: the pull is cancelled
    store = scripted_server.service.store
    data, state = partial_paths(store.blobs, weights.digest)
    wait_for(lambda: state.exists() and json.loads(state.read_text())["parts"][0][2] == 150_000)
    assert not store.has_blob(weights.digest)
    assert scripted_server.http.get("/api/tags").json()["models"] == []
    registry.release(drop=True)
    registry.reset_counts()
    assert response.status_code == 200
    assert pull(scripted_server, registry.name("tiny"), insecure=True)[-1]["status"] == "success"
    assert registry.served(weights.digest) == weights.size - 150_000
    ranges = [
        r["range"]
        for r in registry.requests
        if r["server"] == "cdn" and weights.digest[7:] in r["path"]
    ]
    assert ranges == [f"bytes=150000-{weights.size - 1}"]
    assert not data.exists() and not state.exists()


def test_a_server_restart_mid_pull_resumes_the_download(
    tmp_path: Path, registry: LoopbackRegistry
) -> None:
    weights = tiny(registry).blob("model")
    registry.hold(weights.digest, 200_000)
    first = ScriptedServer(tmp_path / "hana").start()
    client = httpx.Client(base_url=first.url, trust_env=False, timeout=30)

    def pull_until_cut() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server goes away mid-stream
            client.post("/api/pull", json={"model": registry.name("tiny"), "insecure": True})

    puller = threading.Thread(target=pull_until_cut)
    puller.start()
    try:
        assert registry.wait_held()
        wait_received(first, weights.digest, 200_000)
    finally:
        first.stop()  # the server goes down mid-blob
    puller.join(30)
    client.close()
    registry.release(drop=True)
    registry.reset_counts()
    second = ScriptedServer(tmp_path / "hana").start()
    try:
        assert pull(second, registry.name("tiny"), insecure=True)[-1]["status"] == "success"
        assert registry.served(weights.digest) == weights.size - 200_000
        assert second.http.get("/api/tags").json()["models"][0]["name"] == registry.name("tiny")
    finally:
        second.stop()


def test_a_model_larger_than_the_free_disk_is_refused_before_downloading(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    model = tiny(registry)
    manifest = json.loads(model.manifest)
    manifest["layers"][0]["size"] = 10**18  # one exabyte: no disk has that free
    registry.add("huge", RegistryModel(json.dumps(manifest).encode(), model.blobs))
    chunks = pull(scripted_server, registry.name("huge"), insecure=True)
    assert chunks[-1]["error"].startswith(
        f"not enough disk space to pull {registry.name('huge')}: it needs 1000000.0 TB"
    )
    assert registry.served() == 0


def test_pull_progress_is_published_on_the_event_bus(
    scripted_server: ScriptedServer, registry: LoopbackRegistry
) -> None:
    events: list[dict[str, Any]] = []
    client = httpx.Client(base_url=scripted_server.url, trust_env=False, timeout=30)

    def listen() -> None:
        with client.stream("GET", "/api/hana/events") as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    events.append(event)
                    if event.get("event") == "pull" and event["status"] == "success":
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: events)  # subscribed: the first state event arrived
    pull(scripted_server, registry.name("tiny"), insecure=True)
    listener.join(30)
    client.close()
    done = [e for e in events if e.get("event") == "pull"][-1]
    total = sum(b.size for b in tiny(registry).blobs)
    assert done["model"] == registry.name("tiny")
    assert (done["status"], done["total"], done["completed"]) == ("success", total, total)


@pytest.mark.parametrize("name", ["", "hf.co/user/repo:Q4_K_M"])
def test_names_map_to_registry_urls(name: str) -> None:
    from hana_server.store.names import ModelName
    from hana_server.store.registry import blob_url, manifest_url

    if not name:
        parsed = ModelName.parse("llama3.2")
        assert manifest_url(parsed, False) == (
            "https://registry.ollama.ai/v2/library/llama3.2/manifests/latest"
        )
        return
    parsed = ModelName.parse(name)
    assert manifest_url(parsed, False) == "https://hf.co/v2/user/repo/manifests/Q4_K_M"
    assert blob_url(parsed, "sha256:ab", True) == "http://hf.co/v2/user/repo/blobs/sha256:ab"


def test_models_ollama_pulled_are_seen_run_and_not_downloaded_again(
    tmp_path: Path, registry: LoopbackRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hana_server.config import HanaSettings

    # ~/.ollama/models as `ollama pull --insecure 127.0.0.1:P/library/tiny` leaves it.
    ollama = tmp_path / ".ollama" / "models"
    model = tiny(registry)
    for blob in model.blobs:
        path = ollama / "blobs" / blob.digest.replace(":", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob.read(0, blob.size))
    manifest = ollama / "manifests" / registry.host / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(model.manifest)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HANA_MODELS", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    assert HanaSettings().models_dir == str(ollama)  # hana's default store is Ollama's

    server = ScriptedServer(ollama.parent).start()  # its store: <root>/models = Ollama's
    try:
        blobs_before = sorted(p.name for p in (ollama / "blobs").iterdir())
        tags = server.http.get("/api/tags").json()["models"]
        assert [(m["name"], m["digest"]) for m in tags] == [
            (registry.name("tiny"), model.digest[7:])
        ]
        answer = server.http.post(
            "/api/generate",
            json={"model": registry.name("tiny"), "prompt": "hi", "stream": False},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["done"] is True
        assert pull(server, registry.name("tiny"), insecure=True)[-1] == {"status": "success"}
        assert registry.served() == 0
        assert sorted(p.name for p in (ollama / "blobs").iterdir()) == blobs_before
    finally:
        server.stop()
