"""CPU time per generated token of every thread on hana's token path, through real HTTP.

Starts `hana serve` (its own store, bench/run.py's), streams `n` requests of 128 tokens at once,
and reads utime+stime of every thread of the server and of the model's runner from /proc before
and after. The compute threads (the engine thread, which is OpenMP's thread 0, and the OpenMP
workers) do the decode; every other thread's time is the cost of getting tokens to the client
(runner HTTP loop, server proxy), and on 2 cores it is taken from the compute threads.

`python bench/thread_cpu.py [--streams 1 4]` prints JSON (ms of CPU per token per thread group).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from api import HanaBench, HanaServer, steady_rate
from report import CLOCK_TICKS

SERVE_GROUP = "hana serve (all threads)"


def thread_ticks(pid: int) -> dict[int, int]:
    """utime+stime per thread id of one process (Python 3.11 does not name its OS threads)."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(task.name)] = int(fields[11]) + int(fields[12])
    return found


def runner_pids(server_pid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == server_pid:
                pids.append(int(entry.name))
    return pids


def snapshot(server_pid: int) -> dict[str, int]:
    ticks = {SERVE_GROUP: sum(thread_ticks(server_pid).values())}
    for pid in runner_pids(server_pid):
        for tid, value in thread_ticks(pid).items():
            ticks[f"runner {pid} thread {tid}"] = value
    return ticks


async def measure(bench: HanaBench, server_pid: int, streams: int, model: str) -> dict[str, Any]:
    async with bench.client() as client:
        await bench.generate(client, model, n_predict=8)
        before, started = snapshot(server_pid), time.monotonic()
        rounds = [await bench.round(client, model, streams) for _ in range(3)]
        after, seconds = snapshot(server_pid), time.monotonic() - started
    tokens = sum(s.tokens for r in rounds for s in r)
    per_token = {
        name: round((after.get(name, 0) - before.get(name, 0)) / CLOCK_TICKS * 1000 / tokens, 3)
        for name in after
    }
    serve = per_token.pop(SERVE_GROUP)
    # The busiest runner threads are the compute threads (the engine thread is OpenMP's
    # thread 0; the others are OpenMP workers); the rest carry tokens to the client.
    runner = sorted(per_token.values(), reverse=True)
    return {
        "streams": streams,
        "tokens": tokens,
        "wall_ms_per_token": round(seconds * 1000 / tokens, 2),
        "steady_tps": [round(steady_rate(r), 1) for r in rounds],
        "cpu_ms_per_token": {
            "runner_threads_busiest_first": [v for v in runner if v > 0],
            "serve": serve,
        },
    }


def main() -> None:
    from run import CACHE, LOGS, MODEL, N_PREDICT, PROMPT

    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    server = HanaServer(CACHE / "bench-models", LOGS / "hana-serve-thread-cpu.log")
    server.setup()
    with server:
        assert server.proc is not None
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        results = [asyncio.run(measure(bench, server.proc.pid, n, MODEL)) for n in args.streams]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
