"""hana against llama.cpp's own tools, built from the source llama-cpp-python vendors, interleaved.

Every round runs each measurement once, in an order rotated from round to round, so that every
system sees the same machine on average (the box is shared; each measurement records the cores
other processes used meanwhile). Measurements, all on one GGUF, the same threads, 128 tokens,
greedy, raw prompt:
- llama_bench_tg: `llama-bench -p 0 -n 128` (the engine's limit: no sampling, no server);
- llama_server_1 / llama_server_4: `llama-server -np 4`, one stream, and four at once;
- hana_1 / hana_4: `hana serve`, one stream, and four at once;
- hana_two_models: one stream on each of two models (two runners) at once;
- raw_1: llama-cpp-python's low-level API in a plain loop (bench/raw.py).
Single-stream rates are the client's (tokens after the first over first-to-last chunk), the same
measure for every server; the server's own figure is kept beside it. Aggregates of concurrent
streams are `steady_rate` (while all streams decode). Ratios are medians of per-round ratios.

Run alone: `python bench/versus.py [--rounds N]` merges its section into bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from api import HanaBench, HanaServer, ServerProcess, Stream, server_decode_rate, steady_rate
from api import tagged as tag_prompt
from llama_cpp_build import ensure_built, source_version
from report import CpuWatch, summary

PARALLEL = 4
# How OpenMP threads wait decides a lot on few cores (docs/performance.md). Every engine runs as
# it ships unless the environment sets these, and then all of them get the same: llama.cpp's
# tools and the raw loop libgomp's default (spin ~300,000 turns, then sleep), hana's runners
# PASSIVE with GOMP_SPINCOUNT=100000 (runner/priority.py).
OMP_ENV = {
    name: os.environ[name] for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if name in os.environ
}
ROUNDS = 3
GOALS = {
    "hana_1_vs_llama_bench_tg": 0.95,
    "hana_1_vs_llama_server_1": 1.0,
    "hana_4_vs_llama_server_4": 1.0,
    "hana_two_models_vs_hana_1": 1.2,
}


class LlamaServer(ServerProcess):
    """`llama-server -np 4` on the GGUF with hana's threads, batch and per-sequence context."""

    name = "llama-server"
    ready_path = "/health"

    def __init__(
        self, binary: Path, model: Path, threads: int, log_path: Path, ctx_per_seq: int
    ) -> None:
        super().__init__(log_path)
        self.binary, self.model, self.threads, self.ctx_per_seq = (
            binary,
            model,
            threads,
            ctx_per_seq,
        )

    def command(self) -> list[str]:
        return [
            str(self.binary), "-m", str(self.model), "--host", "127.0.0.1",
            "--port", str(self.port), "-t", str(self.threads), "-tb", str(self.threads),
            "-c", str(self.ctx_per_seq * PARALLEL), "-np", str(PARALLEL),
            "-b", "512", "-ub", "512", "--no-webui",
        ]  # fmt: skip

    async def completion(self, client: httpx.AsyncClient, prompt: str, n_predict: int) -> Stream:
        """One streamed `/completion`, greedy (top_k 1: the cheapest greedy llama-server has)."""
        body = {
            "prompt": tag_prompt(prompt),
            "n_predict": n_predict,
            "temperature": 0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "ignore_eos": True,
            "stream": True,
        }
        stream = Stream(sent=time.perf_counter())
        async with client.stream("POST", self.url + "/completion", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                now = time.perf_counter()
                message = json.loads(line[len("data: ") :])
                if message.get("content"):
                    stream.chunk_times.append(now)
                    stream.text += message["content"]
                if message.get("stop"):
                    timings = message.get("timings", {})
                    stream.final = {
                        "eval_count": timings.get("predicted_n"),
                        "server_tps": timings.get("predicted_per_second"),
                    }
        if stream.final.get("eval_count") != n_predict:
            raise RuntimeError(f"llama-server produced {stream.final} instead of {n_predict}")
        return stream


def llama_bench_tg(binary: Path, gguf: Path, threads: int, n_predict: int) -> float:
    """llama-bench's tg rate (one repetition; its own warm-up run comes first)."""
    command = [str(binary), "-m", str(gguf), "-t", str(threads), "-p", "0"]
    command += ["-n", str(n_predict), "-r", "1", "-o", "json"]
    env = {**os.environ, **OMP_ENV}
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600, env=env)
    return float(json.loads(done.stdout)[0]["avg_ts"])


class Versus:
    """The systems, started once and kept warm, and one measurement of each per call."""

    def __init__(
        self,
        hana: HanaBench,
        llama_server: LlamaServer,
        raw_generate: Callable[[int], dict[str, Any]],
        bench_tool: Path,
        gguf: Path,
        threads: int,
        models: tuple[str, str],
    ) -> None:
        self.hana, self.llama_server, self.raw_generate = hana, llama_server, raw_generate
        self.bench_tool, self.gguf, self.threads, self.models = bench_tool, gguf, threads, models
        self.texts: dict[str, str] = {}

    async def _hana(self, client: httpx.AsyncClient, n: int) -> dict[str, float]:
        streams = await self.hana.round(client, self.models[0], n)
        self.texts.setdefault(f"hana_{n}", streams[0].text)
        if n == 1:
            return {"tps": streams[0].client_tps, "server_tps": server_decode_rate(streams[0])}
        return {"tps": steady_rate(streams)}

    async def _llama_server(self, client: httpx.AsyncClient, n: int) -> dict[str, float]:
        n_predict = self.hana.n_predict
        prompt = self.hana.prompt
        jobs = [self.llama_server.completion(client, prompt, n_predict) for _ in range(n)]
        streams = list(await asyncio.gather(*jobs))
        self.texts.setdefault(f"llama_server_{n}", streams[0].text)
        if n == 1:
            return {"tps": streams[0].client_tps, "server_tps": streams[0].final["server_tps"]}
        return {"tps": steady_rate(streams)}

    async def _two_models(self, client: httpx.AsyncClient) -> dict[str, float]:
        jobs = [self.hana.generate(client, model) for model in self.models]
        return {"tps": steady_rate(list(await asyncio.gather(*jobs)))}

    async def measure(self, client: httpx.AsyncClient, name: str) -> dict[str, float]:
        if name == "llama_bench_tg":
            tps = await asyncio.to_thread(
                llama_bench_tg, self.bench_tool, self.gguf, self.threads, self.hana.n_predict
            )
            return {"tps": tps}
        if name == "raw_1":
            run = await asyncio.to_thread(self.raw_generate, 1)
            self.texts.setdefault("raw_1", run["text"])
            return {"tps": run["decode_tps"]}
        if name == "hana_two_models":
            return await self._two_models(client)
        system, _, n = name.rpartition("_")
        if system == "hana":
            return await self._hana(client, int(n))
        return await self._llama_server(client, int(n))


MEASUREMENTS = (
    "llama_bench_tg",
    "llama_server_1",
    "hana_1",
    "llama_server_4",
    "hana_4",
    "hana_two_models",
    "raw_1",
)


async def interleave(versus: Versus, watch: CpuWatch, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in MEASUREMENTS}
    load: dict[str, list[float]] = {name: [] for name in MEASUREMENTS}
    async with versus.hana.client() as client:
        for model in versus.models:
            await versus.hana.generate(client, model, n_predict=8)  # loaded and warm
        await versus.llama_server.completion(client, versus.hana.prompt, 8)
        for index in range(rounds):
            shift = index % len(MEASUREMENTS)
            order = MEASUREMENTS[shift:] + MEASUREMENTS[:shift]
            for name in order:
                section = f"versus round {index + 1}: {name}"
                with watch.section(section, patience=2.0):
                    runs[name].append(await versus.measure(client, name))
                lost = watch.sections[section]
                load[name].append(lost["foreign_cores"] + lost["steal_cores"])
            line = ", ".join(f"{n} {runs[n][-1]['tps']:.1f}" for n in MEASUREMENTS)
            print(f"    round {index + 1} (tok/s): {line}", flush=True)
    return {"runs": runs, "foreign_cores": load}


def _per_round(runs: dict[str, list[dict[str, float]]], top: str, bottom: str) -> dict[str, Any]:
    return summary([a["tps"] / b["tps"] for a, b in zip(runs[top], runs[bottom], strict=True)])


def analyse(measured: dict[str, Any]) -> dict[str, Any]:
    runs = measured["runs"]
    rates = {name: summary([run["tps"] for run in values]) for name, values in runs.items()}
    server_side = {
        name: summary([run["server_tps"] for run in values])
        for name, values in runs.items()
        if values and "server_tps" in values[0]
    }
    ratios = {
        "hana_1_vs_llama_bench_tg": _per_round(runs, "hana_1", "llama_bench_tg"),
        "hana_1_vs_llama_server_1": _per_round(runs, "hana_1", "llama_server_1"),
        "hana_4_vs_llama_server_4": _per_round(runs, "hana_4", "llama_server_4"),
        "hana_two_models_vs_hana_1": _per_round(runs, "hana_two_models", "hana_1"),
        "llama_server_1_vs_llama_bench_tg": _per_round(runs, "llama_server_1", "llama_bench_tg"),
        "raw_1_vs_llama_bench_tg": _per_round(runs, "raw_1", "llama_bench_tg"),
        "hana_1_vs_raw_1": _per_round(runs, "hana_1", "raw_1"),
    }
    foreign = [value for values in measured["foreign_cores"].values() for value in values]
    return {
        "tokens_per_second": rates,
        "server_reported_tps": server_side,
        "ratios": ratios,
        "goals": {
            key: {"goal": f">= {goal}", "median": ratios[key]["median"]}
            | {"met": (ratios[key]["median"] or 0) >= goal}
            for key, goal in GOALS.items()
        },
        "foreign_cores_per_measurement": measured["foreign_cores"],
        "foreign_cores_median": round(statistics.median(foreign), 2) if foreign else None,
    }


def run_versus(
    watch: CpuWatch,
    gguf: Path,
    threads: int,
    hana_url: str,
    raw_generate: Callable[[int], dict[str, Any]],
    *,
    prompt: str,
    n_predict: int,
    ctx_per_seq: int,
    models: tuple[str, str],
    log_dir: Path,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """The interleaved comparison, on a running hana server that has both `models`."""
    tools = ensure_built()
    llama_server = LlamaServer(
        tools["llama-server"], gguf, threads, log_dir / "llama-server.log", ctx_per_seq
    )
    llama_server.start()
    try:
        versus = Versus(
            HanaBench(hana_url, prompt, n_predict),
            llama_server,
            raw_generate,
            tools["llama-bench"],
            gguf,
            threads,
            models,
        )
        measured = asyncio.run(interleave(versus, watch, rounds))
    finally:
        llama_server.stop()
    result = analyse(measured)
    result["settings"] = {
        "llama_cpp_source": f"llama-cpp-python {source_version()} vendor/llama.cpp",
        "llama_server_command": llama_server.command()[1:],
        "llama_server_sampling": "temperature 0, top_k 1, ignore_eos",
        "hana_sampling": "temperature 0 (argmax), raw prompt, num_predict",
        "rounds": rounds,
        "threads": threads,
        "openmp_env": OMP_ENV
        or "as shipped: llama.cpp and raw libgomp's default, hana PASSIVE + GOMP_SPINCOUNT=100000",
        "n_predict": n_predict,
        "order": "rotated by one measurement each round",
    }
    first = {name: text.strip()[:120] for name, text in versus.texts.items()}
    result["same_greedy_text"] = len(set(first.values())) == 1
    result["greedy_text_starts"] = first
    return result


def measure_all(
    watch: CpuWatch, gguf: Path, twin: Path, threads: int, rounds: int = ROUNDS
) -> dict[str, Any]:
    """Start hana (both models) and raw.py, then run the interleaved comparison."""
    from run import CACHE, CTX_PER_SEQ, LOGS, MODEL, N_PREDICT, PROMPT, TWIN, RawWorker

    server = HanaServer(CACHE / "bench-models", LOGS / "hana-serve-versus.log")
    server.setup()
    with server:
        server.create(TWIN, twin)
        worker = RawWorker(gguf, threads)
        try:
            return run_versus(
                watch,
                gguf,
                threads,
                server.url,
                worker.generate,
                prompt=PROMPT,
                n_predict=N_PREDICT,
                ctx_per_seq=CTX_PER_SEQ,
                models=(MODEL, TWIN),
                log_dir=LOGS,
                rounds=rounds,
            )
        finally:
            worker.close()


def main() -> None:
    from run import RESULTS, default_gguf, granted_threads, twin_gguf

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    gguf = default_gguf()
    watch = CpuWatch()
    result = measure_all(watch, gguf, twin_gguf(gguf), granted_threads(), args.rounds)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["versus_llama_cpp"] = result
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_per_second", "ratios", "goals")}, indent=1))


if __name__ == "__main__":
    main()
