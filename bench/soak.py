"""`make soak`: a bounded soak of a real `hana serve` (not part of `make test`).

16 concurrent clients send 2,400 requests (`--requests`) over three tiny models: generations
(native and /v1, streamed and not), embeddings, listings, streams cancelled mid-way, requests
cut off by a client timeout, uploads aborted mid-body, and malformed requests (broken JSON, wrong
types, unknown models, routes and methods, a foreign Host). Meanwhile a separate process probes
`/api/version` every 20 ms: the server's event-loop latency.

Checked at the end: every request answered with its expected status or refused cleanly (JSON
`{"error": ...}`), no 5xx; no leaked slot (every runner back to 0 in flight, nothing queued); no
leaked runner process or file descriptor (same counts as before the soak, models unloaded); no
temp file left in the store; RSS growth bounded; probe p99 under 50 ms. Writes bench/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from server_harness import HanaServerProcess  # noqa: E402

MODELS = ("tiny-a", "tiny-b", "tiny-c")
CLIENTS = 16
RSS_GROWTH_LIMIT = 64 << 20
P99_LIMIT_MS = 50.0
IDLE_PROBE_SECONDS = 5.0
T = TypeVar("T")

# kind -> share of the requests
MIX = {
    "generate": 20,
    "chat_stream": 14,
    "openai_chat": 8,
    "embed": 4,
    "listing": 8,
    "cancel_stream": 8,
    "cancel_timeout": 6,
    "aborted_upload": 2,
    "bad_json": 4,
    "not_object": 3,
    "wrong_type": 4,
    "unknown_model": 4,
    "empty_body": 3,
    "wrong_method": 3,
    "unknown_route": 3,
    "foreign_host": 3,
    "bad_digest": 3,
}


class Outcome(Exception):
    """How one request ended when that was not a plain expected status."""


def expect(response: httpx.Response, status: int) -> str:
    """`ok` if the answer is the expected one; raises Outcome naming what came instead."""
    if response.status_code == status:
        if status >= 400 and "error" not in response.json():
            raise Outcome(f"{status} without an error field")
        return "ok"
    if response.status_code == 503 and "error" in response.json():
        return "refused"  # a full queue is a clean refusal
    raise Outcome(f"expected {status}, got {response.status_code}: {response.text[:200]}")


async def one(kind: str, http: httpx.AsyncClient, rng: random.Random, url: str) -> str:
    model = rng.choice(MODELS)
    small = {"num_predict": rng.randint(1, 12), "temperature": rng.random()}
    if kind == "generate":
        body = {"model": model, "prompt": "hi " * rng.randint(1, 20), "stream": False}
        response = await http.post("/api/generate", json={**body, "options": small})
        result = expect(response, 200)
        if result == "ok" and not response.json().get("done"):
            raise Outcome("generate answer not done")
        return result
    if kind == "chat_stream":
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        async with http.stream("POST", "/api/chat", json={**body, "options": small}) as response:
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
        if response.status_code != 200 or not lines or not lines[-1].get("done"):
            raise Outcome(f"chat stream ended badly: {response.status_code} {lines[-1:]}")
        return "ok"
    if kind == "openai_chat":
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": small["num_predict"],
        }
        return expect(await http.post("/v1/chat/completions", json=body), 200)
    if kind == "embed":  # the tiny models are generation models: a clean 400 is the answer
        return expect(await http.post("/api/embed", json={"model": model, "input": "x y"}), 400)
    if kind == "listing":
        path = rng.choice(["/api/tags", "/api/ps", "/v1/models", "/api/hana/status"])
        return expect(await http.get(path), 200)
    if kind == "cancel_stream":
        body = {"model": model, "prompt": "go", "options": {"num_predict": 400}}
        async with http.stream("POST", "/api/generate", json=body) as response:
            async for line in response.aiter_lines():
                if line and rng.random() < 0.5:
                    break  # the client leaves mid-stream
        return "cancelled"
    if kind == "cancel_timeout":
        body = {"model": model, "prompt": "go", "stream": False, "options": {"num_predict": 400}}
        try:
            response = await http.post("/api/generate", json=body, timeout=rng.uniform(0.005, 0.3))
        except httpx.TimeoutException:
            return "cancelled"
        return expect(response, 200)
    if kind == "aborted_upload":
        host, port = url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        digest = f"sha256:{rng.getrandbits(256):064x}"
        head = f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10000000\r\n"
        writer.write(head.encode() + b"\r\n" + b"\0" * rng.randint(1, 200_000))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        return "cancelled"
    if kind == "bad_json":
        return expect(await http.post("/api/generate", content=b'{"model": "tiny-a", '), 400)
    if kind == "not_object":
        return expect(await http.post("/api/chat", content=b"[1, 2]"), 400)
    if kind == "wrong_type":
        return expect(await http.post("/api/generate", json={"model": model, "stream": []}), 400)
    if kind == "unknown_model":
        return expect(await http.post("/api/show", json={"model": "nope:latest"}), 404)
    if kind == "empty_body":
        return expect(await http.post("/api/embed"), 400)
    if kind == "wrong_method":
        return expect(await http.get("/api/generate"), 405)
    if kind == "unknown_route":
        return expect(await http.post("/api/nope", json={}), 404)
    if kind == "foreign_host":
        headers = {"Host": "evil.example"}
        return expect(await http.post("/api/chat", json={}, headers=headers), 403)
    if kind == "bad_digest":
        digest = "sha256:" + "0" * 64
        return expect(await http.post(f"/api/blobs/{digest}", content=b"not it"), 400)
    raise ValueError(kind)


async def client(
    index: int, url: str, work: list[str], tally: dict[str, Counter[str]], bad: list[str]
) -> None:
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        while work:
            kind = work.pop()
            try:
                result = await one(kind, http, rng, url)
            except Outcome as outcome:
                result = "bad"
                bad.append(f"{kind}: {outcome}")
            except (httpx.HTTPError, OSError, ValueError) as error:
                result = "bad"
                bad.append(f"{kind}: {type(error).__name__}: {error}")
            tally.setdefault(kind, Counter())[result] += 1


def probe(url: str, stop: Any, out: Any) -> None:
    """In its own process: GET /api/version every 20 ms; the latencies in ms go to `out`."""
    latencies: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                http.get("/api/version").raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
            except httpx.HTTPError:
                errors += 1
            time.sleep(0.02)
    out.put((latencies, errors))


def probed(url: str, work: Callable[[], T]) -> tuple[T, list[float], int]:
    """Run `work` while the probe process measures; its result, the latencies and errors."""
    stop = multiprocessing.Event()
    out: Any = multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(url, stop, out))
    prober.start()
    try:
        result = work()
    finally:
        stop.set()
        latencies, errors = out.get(timeout=30)
        prober.join(10)
    return result, latencies, errors


def latency_figures(latencies: list[float], errors: int) -> dict[str, Any]:
    return {
        "samples": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def idle_footprint(server: HanaServerProcess) -> dict[str, int]:
    """Unload every model and wait for the runners to go; the server's fds, RSS, children."""
    for model in MODELS:
        server.http.post("/api/generate", json={"model": model, "keep_alive": 0})
    deadline = time.monotonic() + 30
    while (server.ps() or server.runner_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    return {
        "fds": process.num_fds(),
        "rss": process.memory_info().rss,
        "runner_processes": len(server.runner_pids()),
        "loaded": len(server.ps()),
    }


def settle_slots(server: HanaServerProcess) -> dict[str, int]:
    """Wait for in-flight and queued counts to drain; what is left is leaked."""
    deadline = time.monotonic() + 30
    while True:
        status = server.http.get("/api/hana/status").json()
        in_flight = sum(m["in_flight"] for m in status["models"])
        queued = sum(m["queued"] for m in status["models"]) + len(status["waiting"])
        if (in_flight == 0 and queued == 0) or time.monotonic() > deadline:
            ps_pids = {m["pid"] for m in status["models"]}
            orphans = set(server.runner_pids()) - ps_pids
            return {"in_flight": in_flight, "queued": queued, "orphan_runners": len(orphans)}
        time.sleep(0.1)


async def soak(url: str, total: int) -> tuple[dict[str, Counter[str]], list[str], float]:
    kinds = list(MIX)
    work = random.Random(42).choices(kinds, weights=[MIX[k] for k in kinds], k=total)
    tally: dict[str, Counter[str]] = {}
    bad: list[str] = []
    started = time.monotonic()
    await asyncio.gather(*(client(i, url, work, tally, bad) for i in range(CLIENTS)))
    return tally, bad, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2400)
    parser.add_argument("--out", type=Path, default=HERE / "soak.json")
    parser.add_argument("--log", type=Path, help="keep the server's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hana-soak-") as tmp:
        root = Path(tmp)
        server = HanaServerProcess(
            root / "models",
            root / "serve.log",
            HANA_NUM_PARALLEL="4",
            HANA_MAX_LOADED_MODELS="3",
            HANA_KEEP_ALIVE="5m",
        ).start()
        try:
            for seed, name in enumerate(MODELS):
                server.create_tiny(name, root, seed=seed)
            for name in MODELS:  # warm every code path once before the baseline
                server.http.post(
                    "/api/generate",
                    json={"model": name, "prompt": "x", "options": {"num_predict": 8}},
                )
            before = idle_footprint(server)
            # The same probe on the idle server first: what this machine gives without the soak.
            _, idle_latencies, _ = probed(server.url, lambda: time.sleep(IDLE_PROBE_SECONDS))
            (tally, bad, seconds), latencies, probe_errors = probed(
                server.url, lambda: asyncio.run(soak(server.url, args.requests))
            )
            slots = settle_slots(server)
            after = idle_footprint(server)
            temp_files = [
                p.name for p in (root / "models" / "blobs").iterdir() if p.name.startswith(".tmp-")
            ]
            alive = server.proc is not None and server.proc.poll() is None
        finally:
            server.stop()
            log = server.log()
            if args.log:
                args.log.write_bytes(server.log_path.read_bytes())
    outcomes = Counter[str]()
    for counts in tally.values():
        outcomes.update(counts)
    figures: dict[str, Any] = {
        "requests": sum(outcomes.values()),
        "clients": CLIENTS,
        "models": len(MODELS),
        "seconds": round(seconds, 1),
        "requests_per_second": round(sum(outcomes.values()) / seconds, 1),
        "outcomes": dict(outcomes),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(tally.items())},
        "bad": len(bad),
        "bad_examples": bad[:20],
        "leaked_slots": slots["in_flight"] + slots["queued"],
        "orphan_runner_processes": slots["orphan_runners"],
        "runner_processes_after_unload": after["runner_processes"],
        "fds_before": before["fds"],
        "fds_after": after["fds"],
        "leaked_fds": max(0, after["fds"] - before["fds"]),
        "rss_before_mb": round(before["rss"] / 2**20, 1),
        "rss_after_mb": round(after["rss"] / 2**20, 1),
        "rss_growth_mb": round((after["rss"] - before["rss"]) / 2**20, 1),
        "temp_files_left": len(temp_files),
        "server_alive": alive,
        "probe": latency_figures(latencies, probe_errors),
        "probe_idle_server": latency_figures(idle_latencies, 0),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": psutil.cpu_count(),
    }
    failures = [
        reason
        for reason, failed in [
            ("requests not answered cleanly", bool(bad)),
            ("fewer than 2,000 requests", figures["requests"] < 2000),
            ("leaked slots", figures["leaked_slots"] > 0),
            ("orphan runner processes", figures["orphan_runner_processes"] > 0),
            ("runner processes left after unload", figures["runner_processes_after_unload"] > 0),
            ("leaked file descriptors", figures["leaked_fds"] > 0),
            ("RSS grew too much", after["rss"] - before["rss"] > RSS_GROWTH_LIMIT),
            ("temp files left", bool(temp_files)),
            ("server died", not alive),
            ("probe p99 over 50 ms", figures["probe"]["p99_ms"] >= P99_LIMIT_MS),
            ("probe errors", probe_errors > 0),
        ]
        if failed
    ]
    figures["failures"] = failures
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    if not alive:
        print(log)
    print(f"written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
