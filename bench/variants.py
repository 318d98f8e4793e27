"""A/B of `hana serve` settings: several servers side by side, one per variant (its environment),
measured in interleaved rounds so that the machine's drift hits every variant alike.

    python bench/variants.py '{"i25": {"HANA_STREAM_INTERVAL": "25"}, "i50": {}}' [--rounds 6]
        [--streams 1]

The first variant is the base: every other one is reported as a median of per-round ratios to
it. An environment may also set PYTHONPATH to run another checkout's code (`git worktree add`).
Rates are the client's, as in bench/versus.py; the numbers go to stdout only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from api import HanaBench, HanaServer, steady_rate
from report import summary
from run import CACHE, LOGS, MODEL, N_PREDICT, PROMPT


async def interleave(
    servers: dict[str, HanaServer], rounds: int, streams: int
) -> dict[str, list[float]]:
    benches = {name: HanaBench(server.url, PROMPT, N_PREDICT) for name, server in servers.items()}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    names = list(servers)
    async with HanaBench("", PROMPT, N_PREDICT).client() as client:
        for bench in benches.values():
            await bench.generate(client, MODEL, n_predict=8)  # loaded and warm
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                measured = await benches[name].round(client, MODEL, streams)
                rate = measured[0].client_tps if streams == 1 else steady_rate(measured)
                rates[name].append(rate)
            line = ", ".join(f"{name} {rates[name][-1]:.1f}" for name in names)
            print(f"round {index + 1} (tok/s): {line}", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", type=json.loads, help='{"name": {"ENV": "value"}, ...}')
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    servers: dict[str, HanaServer] = {}
    try:
        for name, env in args.variants.items():
            server = HanaServer(CACHE / "bench-models", LOGS / f"variant-{name}.log", env=env)
            server.start()
            servers[name] = server
        rates = asyncio.run(interleave(servers, args.rounds, args.streams))
    finally:
        for server in servers.values():
            server.stop()
    base, *others = list(rates)
    result: dict[str, Any] = {"tokens_per_second": {n: summary(v) for n, v in rates.items()}}
    result["ratios_to_" + base] = {
        name: summary([a / b for a, b in zip(rates[name], rates[base], strict=True)])
        for name in others
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
