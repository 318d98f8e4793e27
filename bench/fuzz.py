"""`make fuzz`: every operation of the API's OpenAPI document, fuzzed against a real `hana serve`
(three tiny models, real runner processes): valid and invalid bodies, paths and parameters.

Writes bench/fuzz.json and prints the figures: cases tried, answers by status, 5xx (each with a
curl line to replay it) and hangs (no answer within the timeout). Exits 1 if any 5xx or hang.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from api_fuzz import fuzz  # noqa: E402
from server_harness import HanaServerProcess  # noqa: E402

MODELS = ("tiny-a", "tiny-b", "tiny-c")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a hang")
    parser.add_argument("--out", type=Path, default=HERE / "fuzz.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hana-fuzz-") as tmp:
        root = Path(tmp)
        server = HanaServerProcess(root / "models", root / "serve.log").start()
        try:
            for seed, name in enumerate(MODELS):
                server.create_tiny(name, root, seed=seed)
            document = server.http.get("/api/openapi.json").json()
            report = fuzz(
                server.url, document, examples=args.examples, timeout=args.timeout, models=MODELS
            )
            alive = server.proc is not None and server.proc.poll() is None
        finally:
            server.stop()
    figures = {**report.as_json(), "server_alive_after": alive}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    summary = {k: v for k, v in figures.items() if not k.endswith("_cases")}
    print(json.dumps(summary, indent=2))
    for case in report.server_errors[:20]:
        print(f"5xx {case['status']} {case['method']} {case['path']}: {case['curl'][:200]}")
    for case in report.hangs[:20]:
        print(f"hang {case['method']} {case['path']}: {case['curl'][:200]}")
    print(f"written to {args.out}")
    return 1 if report.server_errors or report.hangs or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
