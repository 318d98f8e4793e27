"""Two models busy at once under each OpenMP wait policy, through `hana serve`.

The runner sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets one; this starts
`hana serve` once per policy (the runners inherit the server's environment) and runs
HanaBench.two_models on gemma3:270m and its twin (bench/run.py): one stream alone, then one on
each model at once, `--repeats` times, policies alternating round by round.

`python bench/omp_policy.py [--repeats 2]` prints JSON with the foreign load of each section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from api import HanaBench, HanaServer
from report import CpuWatch

# libgomp reads GOMP_SPINCOUNT even under PASSIVE: "spin" is libgomp's own default behaviour
# (spin about 3 ms = 300000 spins, then sleep), which the runner's PASSIVE default otherwise hides.
POLICIES = ("PASSIVE", "ACTIVE", "spin")


def measure(policy: str, watch: CpuWatch, round_index: int) -> dict[str, Any]:
    from run import CACHE, LOGS, MODEL, N_PREDICT, PROMPT, TWIN, default_gguf, twin_gguf

    env = {"OMP_WAIT_POLICY": policy}
    if policy == "spin":
        env = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"}
    server = HanaServer(CACHE / "bench-models", LOGS / f"hana-serve-omp-{policy}.log", env)
    server.setup()
    with server:
        server.create(TWIN, twin_gguf(default_gguf()))
        bench = HanaBench(server.url, PROMPT, N_PREDICT)
        with watch.section(f"omp {policy} round {round_index}", patience=2.0):
            return asyncio.run(bench.two_models([MODEL, TWIN], 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    watch = CpuWatch()
    results: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
    for index in range(args.repeats):
        for policy in POLICIES:
            results[policy].append(measure(policy, watch, index + 1))
            print(json.dumps({policy: results[policy][-1]}), flush=True)  # a long run's partials
    print(json.dumps({"policies": results, "noise": watch.sections}, indent=1))


if __name__ == "__main__":
    main()
