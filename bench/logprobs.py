"""Per-token decode cost of one runner with and without logprobs (issue 15).

    PYTHONPATH=$WT:$WT/server_ext python bench/logprobs.py [--model GGUF] [--tokens 64]
        [--rounds 3] [--baseline OTHER_CHECKOUT]

Starts one real runner process (1 thread by default) and times greedy completions of a fixed
length: the plain path, then `logprobs` with 0 and 5 alternatives. Prints ms per generated token
(the runner's own eval_duration / eval_count) as the median of the rounds. With `--baseline`, a
second runner runs the other checkout's code (e.g. main before the change) and its plain path is
timed in the same rounds, one request at a time, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

from hana_server.launchers import RunnerProcess

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / ".make" / "gemma-3-270m-q4_k_m.gguf"


async def ms_per_token(runner: RunnerProcess, tokens: int, extra: dict[str, Any]) -> float:
    body = {
        "prompt": "Write a long story about a lighthouse keeper.",
        # EOS cannot end it early: a huge negative bias is not an Ollama option, so ask for
        # few enough tokens that gemma does not stop, and check eval_count.
        "options": {"temperature": 0, "num_predict": tokens},
        **extra,
    }
    final: dict[str, Any] = {}
    async for message in runner.client.completion(body):
        if message.get("done"):
            final = message
    count = final.get("eval_count", 0)
    if count < 2:
        raise RuntimeError(f"the model stopped after {count} tokens")
    return final["eval_duration"] / 1e6 / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another checkout to time the plain path of")
    args = parser.parse_args()
    options = {"ctx_size": 1024, "parallel": 1, "threads": args.threads}
    runners = {"this": await RunnerProcess.start(args.model, **options)}
    if args.baseline is not None:
        root = args.baseline.resolve()
        env = {"PYTHONPATH": f"{root}:{root / 'server_ext'}"}
        runners["baseline"] = await RunnerProcess.start(args.model, **options, extra_env=env)
    try:
        for runner in runners.values():
            await runner.wait_ready(300)
            await ms_per_token(runner, 8, {})  # warm-up
        cases: dict[str, tuple[RunnerProcess, dict[str, Any]]] = {
            "plain": (runners["this"], {}),
            "logprobs, top 0": (runners["this"], {"logprobs": True}),
            "logprobs, top 5": (runners["this"], {"logprobs": True, "top_logprobs": 5}),
        }
        if "baseline" in runners:
            cases["baseline plain"] = (runners["baseline"], {})
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (runner, extra) in cases.items():
                results[name].append(await ms_per_token(runner, args.tokens, extra))
        for name, values in results.items():
            rounds = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name:18s} {statistics.median(values):7.2f} ms/token  (rounds: {rounds})")
    finally:
        for runner in runners.values():
            await runner.terminate()


if __name__ == "__main__":
    asyncio.run(main())
