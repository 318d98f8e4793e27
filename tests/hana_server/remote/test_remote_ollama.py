"""Remote models on an Ollama-native upstream: a second real `hana serve` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from remote_harness import UPSTREAM_KEY, create_remote
from server_harness import HanaServerProcess, free_port, wait_for

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}


@pytest.fixture(scope="module")
def remote(upstream: HanaServerProcess, local: HanaServerProcess) -> str:
    """`far` on the local server: tiny on the upstream, with a local SYSTEM and PARAMETERs."""
    response = create_remote(
        local,
        "far",
        **{"from": "tiny"},
        remote_host=upstream.url,
        remote_key_env="UPSTREAM_API_KEY",
        system="You are far away.",
        parameters={"num_predict": 7, "temperature": 0, "seed": 1},
        info={"capabilities": ["completion"], "model_family": "llama", "context_length": 4096},
    )
    assert response.status_code == 200, response.text
    return "far:latest"


def direct(upstream: HanaServerProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = upstream.http.post(path, json={**body, "stream": False})
    assert response.status_code == 200, response.text
    return response.json()


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_create_lists_and_shows_remote(local: HanaServerProcess, remote: str) -> None:
    tags = {m["name"]: m for m in local.http.get("/api/tags").json()["models"]}
    entry = tags[remote]
    host = entry["remote_host"]
    assert host.startswith("http://127.0.0.1:") and entry["remote_model"] == "tiny"
    assert entry["capabilities"] == ["completion"]
    assert entry["details"]["family"] == "llama"
    show = local.http.post("/api/show", json={"model": remote}).json()
    assert show["remote_model"] == "tiny" and show["remote_host"] == host
    assert show["system"] == "You are far away."
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["llama.context_length"] == 4096
    assert "FROM tiny" in show["modelfile"]


def test_create_normalises_host_like_ollama(local: HanaServerProcess) -> None:
    response = create_remote(local, "norm", **{"from": "x"}, remote_host="127.0.0.1")
    assert response.status_code == 200
    show = local.http.post("/api/show", json={"model": "norm"}).json()
    assert show["remote_host"] == "http://127.0.0.1:11434"
    bad = create_remote(local, "bad", **{"from": "x"}, remote_host="ftp://h")
    assert bad.status_code == 400 and bad.json() == {"error": "bad remote"}
    key = create_remote(local, "k", **{"from": "x"}, remote_host="h", remote_key_env="HOME")
    assert key.status_code == 400 and "API_KEY" in key.json()["error"]


def test_generate_merges_local_system_and_options(
    upstream: HanaServerProcess, local: HanaServerProcess, remote: str
) -> None:
    via = local.http.post("/api/generate", json={"model": remote, "prompt": "hi", "stream": False})
    assert via.status_code == 200, via.text
    answer = via.json()
    # The same request sent straight to the upstream with the Modelfile's SYSTEM and options.
    expected = direct(
        upstream,
        "/api/generate",
        {
            "model": "tiny",
            "prompt": "hi",
            "system": "You are far away.",
            "options": GREEDY | {"num_predict": 7},
        },
    )
    assert answer["response"] == expected["response"]
    assert answer["eval_count"] == 7  # the local PARAMETER num_predict reached the upstream
    assert answer["prompt_eval_count"] == expected["prompt_eval_count"]
    assert answer["model"] == remote
    assert answer["remote_model"] == "tiny" and answer["remote_host"].endswith(str(upstream.port))
    assert answer["done_reason"] == "length"
    assert answer["total_duration"] > 0 and answer["eval_duration"] > 0


def test_request_options_win_over_local_ones(local: HanaServerProcess, remote: str) -> None:
    body = {"model": remote, "prompt": "hi", "options": {"num_predict": 3}, "stream": False}
    assert local.http.post("/api/generate", json=body).json()["eval_count"] == 3


def test_generate_stream_chunks_carry_remote_fields(local: HanaServerProcess, remote: str) -> None:
    with local.http.stream("POST", "/api/generate", json={"model": remote, "prompt": "a"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        chunks = ndjson(r)
    assert len(chunks) == 8  # 7 tokens + the final chunk
    for chunk in chunks:
        assert chunk["model"] == remote and chunk["remote_model"] == "tiny"
        assert chunk["remote_host"]
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == 7


def test_chat_stream_and_not(
    upstream: HanaServerProcess, local: HanaServerProcess, remote: str
) -> None:
    messages = [{"role": "user", "content": "hello"}]
    whole = local.http.post(
        "/api/chat", json={"model": remote, "messages": messages, "stream": False}
    ).json()
    with local.http.stream("POST", "/api/chat", json={"model": remote, "messages": messages}) as r:
        chunks = ndjson(r)
    streamed = "".join(c["message"]["content"] for c in chunks)
    assert streamed == whole["message"]["content"] and whole["eval_count"] == 7
    expected = direct(
        upstream,
        "/api/chat",
        {
            "model": "tiny",
            "messages": [{"role": "system", "content": "You are far away."}, *messages],
            "options": GREEDY | {"num_predict": 7},
        },
    )
    assert whole["message"]["content"] == expected["message"]["content"]


def test_format_is_passed_through(
    upstream: HanaServerProcess, local: HanaServerProcess, remote: str
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    body = {"prompt": "json please", "format": schema, "options": {"num_predict": 40}}
    via = local.http.post("/api/generate", json={"model": remote, **body, "stream": False}).json()
    plain = local.http.post(
        "/api/generate",
        json={
            "model": remote,
            "prompt": "json please",
            "stream": False,
            "options": {"num_predict": 40},
        },
    ).json()
    expected = direct(
        upstream,
        "/api/generate",
        {
            "model": "tiny",
            **body,
            "system": "You are far away.",
            "options": GREEDY | {"num_predict": 40},
        },
    )
    assert via["response"] == expected["response"] != plain["response"]
    assert via["response"].lstrip().startswith("{")


def test_embed_goes_upstream(upstream: HanaServerProcess, local: HanaServerProcess) -> None:
    created = create_remote(
        local,
        "far-embed",
        **{"from": "tiny-embed"},
        remote_host=upstream.url,
        remote_key_env="UPSTREAM_API_KEY",
        info={"capabilities": ["embedding"]},
    )
    assert created.status_code == 200
    via = local.http.post("/api/embed", json={"model": "far-embed", "input": ["a", "bc"]}).json()
    expected = direct(upstream, "/api/embed", {"model": "tiny-embed", "input": ["a", "bc"]})
    assert via["embeddings"] == expected["embeddings"]
    assert via["prompt_eval_count"] == expected["prompt_eval_count"] > 0
    assert via["model"] == "far-embed:latest" and via["remote_model"] == "tiny-embed"


def test_upstream_errors_are_ollama_shaped(
    upstream: HanaServerProcess, local: HanaServerProcess
) -> None:
    cases = {
        "no-key": ({"from": "tiny"}, 401, "refused the request"),
        "wrong-key": ({"from": "tiny", "remote_key_env": "WRONG_API_KEY"}, 401, "WRONG_API_KEY"),
        "missing": ({"from": "nope", "remote_key_env": "UPSTREAM_API_KEY"}, 404, "not found"),
    }
    for name, (fields, status, words) in cases.items():
        assert create_remote(local, name, remote_host=upstream.url, **fields).status_code == 200
        for path, body in (
            ("/api/generate", {"prompt": "x"}),
            ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
        ):
            response = local.http.post(path, json={"model": name, **body})
            assert response.status_code == status, (name, response.text)
            assert set(response.json()) == {"error"} and words in response.json()["error"]
    down = f"http://127.0.0.1:{free_port()}"
    assert create_remote(local, "down", **{"from": "tiny"}, remote_host=down).status_code == 200
    response = local.http.post("/api/generate", json={"model": "down", "prompt": "x"})
    assert response.status_code == 502 and "unreachable" in response.json()["error"]
    assert "Traceback" not in local.log()


def test_silent_upstream_times_out(local: HanaServerProcess, silent_port: int) -> None:
    host = f"http://127.0.0.1:{silent_port}"
    assert create_remote(local, "silent", **{"from": "x"}, remote_host=host).status_code == 200
    response = local.http.post("/api/generate", json={"model": "silent", "prompt": "x"})
    assert response.status_code == 504 and "timed out" in response.json()["error"]


def test_allow_list_refuses_other_hosts(
    upstream: HanaServerProcess, local: HanaServerProcess
) -> None:
    # HANA_REMOTES is 127.0.0.1: the same upstream named as `localhost` is another host.
    other = upstream.url.replace("127.0.0.1", "localhost")
    assert create_remote(local, "other", **{"from": "tiny"}, remote_host=other).status_code == 200
    for path, body in (
        ("/api/generate", {"prompt": "x"}),
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
        ("/api/embed", {"input": "x"}),
    ):
        response = local.http.post(path, json={"model": "other", **body})
        assert response.status_code == 400
        assert response.json() == {"error": "this server cannot run this remote model"}


def long_stream(local: HanaServerProcess, model: str, started: threading.Event) -> threading.Thread:
    """A streaming request that would run for a long time; it reads one chunk, signals, and
    then keeps the connection until the test closes the returned thread's client."""
    client = httpx.Client(base_url=local.url, timeout=60)
    body = {"model": model, "prompt": "go", "options": {"num_predict": 60000, "num_ctx": 8192}}

    def run() -> None:
        with client.stream("POST", "/api/generate", json=body) as response:
            for _ in response.iter_lines():
                started.set()
                while not getattr(thread, "stop", False):
                    time.sleep(0.02)
                return  # leaving the block closes the connection mid-stream

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def upstream_busy(upstream: HanaServerProcess) -> int:
    return sum(m["in_flight"] for m in upstream.ps())


def test_client_disconnect_cancels_upstream_and_gate_queues(
    upstream: HanaServerProcess, local: HanaServerProcess, remote: str
) -> None:
    started = threading.Event()
    first = long_stream(local, remote, started)
    assert started.wait(30)
    assert upstream_busy(upstream) == 1
    # One slot per upstream (HANA_REMOTE_PARALLEL=1), one waiter (HANA_MAX_QUEUE=1): the next
    # request waits, the one after is refused with the scheduler's 503.
    waiting = threading.Thread(
        target=lambda: local.http.post(
            "/api/generate", json={"model": remote, "prompt": "q", "stream": False}
        ),
        daemon=True,
    )
    waiting.start()
    entry = wait_for(
        lambda: next((m for m in local.ps() if m["name"] == remote and m["queued"] == 1), None)
    )
    assert entry["state"] == "remote" and entry["in_flight"] == 1
    assert entry["remote_model"] == "tiny" and entry["pid"] is None and entry["size"] == 0
    busy = local.http.post("/api/generate", json={"model": remote, "prompt": "x"})
    assert busy.status_code == 503 and "server busy" in busy.json()["error"]
    first.stop = True  # type: ignore[attr-defined]
    first.join(10)
    waiting.join(30)
    assert not waiting.is_alive()  # the waiter got the slot once the first client left
    wait_for(lambda: upstream_busy(upstream) == 0)  # the upstream dropped the sequence
    entry = next(m for m in local.ps() if m["name"] == remote)
    assert entry["in_flight"] == 0 and entry["queued"] == 0


def test_load_and_unload_are_answered_locally(local: HanaServerProcess, remote: str) -> None:
    load = local.http.post("/api/generate", json={"model": remote, "stream": False}).json()
    assert load["done_reason"] == "load" and load["remote_model"] == "tiny"
    unload = local.http.post("/api/chat", json={"model": remote, "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"


def test_openai_route_reaches_remote(local: HanaServerProcess, remote: str) -> None:
    response = local.http.post(
        "/v1/chat/completions",
        json={"model": remote, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 4


def test_api_key_never_stored(local: HanaServerProcess, remote: str) -> None:
    blobs = local.models_dir / "blobs"
    for blob in blobs.iterdir():
        assert UPSTREAM_KEY.encode() not in blob.read_bytes()


def test_cli_creates_remote_model(
    upstream: HanaServerProcess, local: HanaServerProcess, tmp_path: Path
) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM ./weights.gguf\nSYSTEM """Be far."""\nPARAMETER num_predict 5\n')
    hana = Path(sys.executable).parent / "hana"
    remote = ["--remote", upstream.url, "--from", "tiny", "--api-key-env", "UPSTREAM_API_KEY"]
    done = subprocess.run(
        [str(hana), "create", "far-cli", *remote, "-f", str(modelfile)],
        env={**os.environ, "HANA_URL": local.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("success")
    show = local.http.post("/api/show", json={"model": "far-cli"}).json()
    assert show["system"] == "Be far." and show["remote_model"] == "tiny"
    answer = local.http.post(
        "/api/generate", json={"model": "far-cli", "prompt": "x", "stream": False}
    ).json()
    assert answer["eval_count"] == 5 and answer["remote_host"] == upstream.url
