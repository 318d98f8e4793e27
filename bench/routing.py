"""The `auto` router's overhead per request on its rule-based path (goal: under 5 ms).

Times `Router.answer` on every prompt of the labelled set (tests/hana_server/routing/
labelled_prompts.json, long documents included) with a `start` that returns at once: what is
left is all the router adds to a request (route table, classification, fallback loop, counters,
the `route` event). Also times `classify` alone. Writes bench/routing.json and prints it.

    python bench/routing.py [--rounds N] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "server_ext"))  # the checkout's hana_server, not an installed one

from hana_server.config import HanaSettings  # noqa: E402
from hana_server.routing.classifier import classify  # noqa: E402
from hana_server.routing.router import Router  # noqa: E402

LABELLED = ROOT / "tests" / "hana_server" / "routing" / "labelled_prompts.json"
GOAL_MS = 5.0


def prompts() -> list[tuple[str, str]]:
    cases = json.loads(LABELLED.read_text())["prompts"]
    return [
        (
            c["prompt"] + ("\n\n" + c["document"] * c["times"] if "document" in c else ""),
            "\n".join(c.get("history", [])),
        )
        for c in cases
    ]


def summary(seconds: list[float], prompts: int) -> dict[str, float]:
    """Mean and percentiles over every request; `worst_prompt_best_ms` is the slowest prompt's
    fastest round, the number a shared machine's preemptions do not inflate."""
    per_prompt = [min(seconds[i::prompts]) * 1000 for i in range(prompts)]
    ms = sorted(s * 1000 for s in seconds)
    return {
        "worst_prompt_best_ms": round(max(per_prompt), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "p50_ms": round(ms[len(ms) // 2], 4),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 4),
        "max_ms": round(ms[-1], 4),
    }


async def time_router(cases: list[tuple[str, str]], rounds: int) -> list[float]:
    settings = HanaSettings(routes={"simple": "a", "medium": "b", "complex": "c"})
    events: list[dict[str, Any]] = []
    router = Router(settings, grader=None, publish=events.append)

    async def start(model: str) -> str:
        return model

    seconds = []
    for _ in range(rounds):
        for prompt, context in cases:
            began = time.perf_counter()
            await router.answer("auto", {}, prompt, context, start)
            seconds.append(time.perf_counter() - began)
        events.clear()
    return seconds


def time_classifier(cases: list[tuple[str, str]], rounds: int) -> list[float]:
    seconds = []
    for _ in range(rounds):
        for prompt, context in cases:
            began = time.perf_counter()
            classify(prompt, context)
            seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "routing.json")
    args = parser.parse_args()
    cases = prompts()
    longest = max(len(p) + len(c) for p, c in cases)
    router = summary(asyncio.run(time_router(cases, args.rounds)), len(cases))
    result = {
        "router_overhead_ms_per_request": router["mean_ms"],
        "goal_ms": GOAL_MS,
        "router": router,
        "classify": summary(time_classifier(cases, args.rounds), len(cases)),
        "requests": len(cases) * args.rounds,
        "prompts": len(cases),
        "longest_prompt_chars": longest,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # a shared box: read the p99 with it
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
