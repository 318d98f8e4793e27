"""Where the milliseconds of one decode step go inside hana's runner engine.

Runs the real `CompletionEngine` (the runner's engine thread, its batch, sampler chains, text
handling and hand-off to an asyncio loop running in another thread) on a GGUF, with timers
wrapped around the llama.cpp calls it makes, and reports per step (median, ms):
- decode: `llama_decode` (graph compute plus OpenMP wake-up of the worker threads);
- sample: the sampler call per row (greedy: building the candidate array of the whole vocabulary
  and the argmax, or hana's fast path);
- logits: `llama_get_logits_ith` alone (measured in a separate loop on the same context);
- text: the rest of the per-row work (piece lookup, UTF-8, stop strings, messages);
- batch: building the batch before the decode; handoff: `_flush_outbox` in the engine thread;
- delivery: from the hand-off to the message reaching its sink on the event loop (latency, not
  engine time); step: the whole `_step`; loop: wall time per step including the engine loop.

`python bench/profile_step.py GGUF [--streams 1 4] [--omp runner|PASSIVE|ACTIVE|default]
[--stream-interval MS]` prints JSON. The OpenMP policy is read when libgomp loads, so each
policy needs its own process (`--omp` sets it first; `runner`, the default, is the runner's).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _median_ms(values: list[int]) -> float:
    return round(statistics.median(values) / 1e6, 3) if values else 0.0


class Timers:
    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = {}

    def add(self, name: str, ns: int) -> None:
        self.samples.setdefault(name, []).append(ns)

    def wrap(self, name: str, function: Any) -> Any:
        add = self.add
        clock = time.perf_counter_ns

        def timed(*args: Any) -> Any:
            start = clock()
            try:
                return function(*args)
            finally:
                add(name, clock() - start)

        return timed

    def reset(self) -> None:
        self.samples.clear()


TIMERS = Timers()


def _native_sample(chain: Any, ctx: Any, row: int) -> int:
    import llama_cpp

    return int(llama_cpp.llama_sampler_sample(chain, ctx, row))


def _patch_llama_cpp() -> None:
    """Time llama.cpp's calls as the engine makes them (it looks them up on the module)."""
    import llama_cpp

    decode = llama_cpp.llama_decode
    wall, cpu, add = time.perf_counter_ns, time.thread_time_ns, TIMERS.add

    def timed_decode(ctx: Any, batch: Any) -> int:
        # Wall time, and the calling thread's CPU time: with 1 thread (no OpenMP worker, no
        # barrier to spin at) the latter is the compute itself, and barely moved by other load.
        start, start_cpu = wall(), cpu()
        try:
            return int(decode(ctx, batch))
        finally:
            add("decode", wall() - start)
            add("decode_cpu", cpu() - start_cpu)

    llama_cpp.llama_decode = timed_decode


def profile(
    gguf: Path,
    streams: int,
    threads: int,
    n_predict: int,
    prompt: str,
    native_greedy: bool,
    parallel: int | None = None,
    ctx_size: int = 4096,
    stream_interval: float = 0.0,
) -> dict[str, Any]:
    import llama_cpp
    import numpy as np
    from hana_server.runner import engine as engine_module
    from hana_server.runner.sampling import SamplingOptions, build_sampler_chain
    from hana_server.runner.sequences import CompletionSequence
    from hana_server.runner.settings import RunnerSettings

    timers = TIMERS
    get_logits = llama_cpp.llama_get_logits_ith

    slots = max(parallel or streams, streams)
    settings = RunnerSettings(model=gguf, ctx_size=ctx_size, parallel=slots, threads=threads)
    model = engine_module.LoadedModel.load(gguf, on_progress=lambda _v: None, should_abort=bool)
    ctx = model.new_context(settings)
    # No `_warm_up` here: run_round's warm-up decodes on the engine thread. A decode on this
    # thread would start a second OpenMP team, and libgomp throttles spinning (to ~1,000 turns)
    # while it manages more threads than there are CPUs: decodes then ran ~2x slower.

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    engine = engine_module.CompletionEngine(
        model,
        ctx,
        loop,
        parallel=settings.parallel,
        threads=threads,
        swa_full=False,
        on_crash=lambda message: print(message, file=sys.stderr),
        stream_interval=stream_interval,
    )
    clock = time.perf_counter_ns
    original_step, original_sample = engine._step, engine._sample
    original_flush = engine._flush_outbox
    sampler_ns: list[int] = []
    delivered: list[int] = []
    flushed_at: list[int] = [0]

    def step() -> None:
        start = clock()
        original_step()
        timers.add("step", clock() - start)

    def sample(completion: Any, row: int) -> None:
        before = len(timers.samples.get("sample", ()))
        start = clock()
        original_sample(completion, row)
        total = clock() - start
        spent = sum(timers.samples.get("sample", [])[before:])
        sampler_ns.append(spent)
        timers.add("text", total - spent)

    def flush(*, force: bool = False) -> None:
        start = clock()
        flushed_at[0] = start
        original_flush(force=force)
        timers.add("handoff", clock() - start)

    engine._step, engine._sample, engine._flush_outbox = step, sample, flush  # type: ignore[method-assign]

    engine.start()

    def run_round() -> float:
        done = threading.Event()
        remaining = [streams]
        tokens = [0]

        def sink(message: dict[str, Any]) -> None:
            delivered.append(clock() - flushed_at[0])
            if "content" in message:
                tokens[0] += 1
            if message.get("done"):
                remaining[0] -= 1
                if not remaining[0]:
                    done.set()

        options = SamplingOptions(temperature=0.0, num_predict=n_predict, seed=1)
        start = clock()
        for _ in range(streams):
            sampler = build_sampler_chain(model.vocab, model.n_vocab, ctx_size, options, None)
            if native_greedy:
                sampler.sample_at = functools.partial(_native_sample, sampler._chain)
            sampler.sample_at = timers.wrap("sample", sampler.sample_at)
            engine.submit(
                CompletionSequence(
                    model.tokenize(prompt),
                    sampler,
                    options,
                    sink,
                    n_ctx=ctx_size,
                    penalty_window=64,
                )
            )
        done.wait(600)
        return (clock() - start) / 1e9

    run_round()  # warm-up: graphs for this batch shape, pieces learnt
    timers.reset()
    sampler_ns.clear()
    delivered.clear()
    wall = run_round()
    steps = len(timers.samples["step"])

    engine.stop(5)
    # Logits access alone, and an argmax over a numpy view of them, on the last decode's row.
    logits_ns, argmax_ns = [], []
    for _ in range(200):
        start = clock()
        pointer = get_logits(ctx, -1)
        middle = clock()
        int(np.ctypeslib.as_array(pointer, shape=(model.n_vocab,)).argmax())
        argmax_ns.append(clock() - middle)
        logits_ns.append(middle - start)
    loop.call_soon_threadsafe(loop.stop)

    per_row_sample = _median_ms(sampler_ns)
    result = {
        "streams": streams,
        "threads": threads,
        "slots": slots,
        "ctx_per_slot": ctx_size,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "default"),
        "sampler": "llama_sampler_sample" if native_greedy else "build_sampler_chain",
        "steps": steps,
        "tokens_per_second": round(streams * n_predict / wall, 1),
        "ms_per_step": {
            "loop_wall": round(wall * 1000 / steps, 3),
            "step": _median_ms(timers.samples["step"]),
            "decode": _median_ms(timers.samples["decode"]),
            "decode_cpu_engine_thread": _median_ms(timers.samples["decode_cpu"]),
            "sample": round(per_row_sample * streams, 3),
            "text_and_messages": round(_median_ms(timers.samples["text"]) * streams, 3),
            "handoff": _median_ms(timers.samples.get("handoff", [])),
        },
        "ms_per_row": {"sample": per_row_sample, "text": _median_ms(timers.samples["text"])},
        "delivery_latency_ms": _median_ms(delivered),
        "logits_access_ms": _median_ms(logits_ns),
        "numpy_argmax_ms": _median_ms(argmax_ns),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=None, help="slots (default: streams)")
    parser.add_argument("--ctx-size", type=int, default=4096, help="context per slot")
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument(
        "--stream-interval",
        type=float,
        default=0.0,
        help="ms between two hand-offs to the event loop (the runner's --stream-interval)",
    )
    parser.add_argument(
        "--omp",
        choices=["runner", "PASSIVE", "ACTIVE", "default"],
        default="runner",
        help="OpenMP waiting: runner = what a runner sets (PASSIVE, GOMP_SPINCOUNT 100000, "
        "unless the environment chooses); PASSIVE/ACTIVE = that OMP_WAIT_POLICY alone; "
        "default = libgomp's own",
    )
    parser.add_argument(
        "--native-greedy",
        action="store_true",
        help="sample greedy rows with llama_sampler_sample, as before the argmax fast path",
    )
    args = parser.parse_args()
    # Before llama_cpp loads libgomp, which reads the policy once.
    if args.omp == "runner":
        from hana_server.runner.priority import set_openmp_waiting

        set_openmp_waiting(os.environ)
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
        os.environ.pop("GOMP_SPINCOUNT", None)
        if args.omp != "default":
            os.environ["OMP_WAIT_POLICY"] = args.omp
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import PROMPT

    _patch_llama_cpp()
    results = []
    for n in args.streams:
        args_of_run = (args.gguf, n, args.threads, args.n_predict, PROMPT, args.native_greedy)
        interval = args.stream_interval / 1000
        results.append(profile(*args_of_run, args.parallel, args.ctx_size, interval))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
