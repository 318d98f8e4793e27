"""llama-cpp-python's own server (`python -m llama_cpp.server`) on the same GGUF and threads.

It serves one request at a time (an outer and an inner lock around the single `Llama`), so N
concurrent streams are answered one after another. `interrupt_requests` is turned off: its
default cuts a running stream short as soon as another request waits, which would make the four
requests produce fewer tokens instead of measuring how long four full answers take.
`logits_all` and `verbose` are turned off (their defaults cost speed), and `n_ctx` holds the prompt
and the answer of the request being served.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from api import ServerProcess, Stream, tagged, wall_rate
from report import repetitions, summary


class ReferenceServer(ServerProcess):
    """`python -m llama_cpp.server` on the GGUF, with the same threads as hana's runner."""

    name = "llama_cpp.server"
    ready_path = "/v1/models"

    def __init__(self, model: Path, threads: int, log_path: Path, n_ctx: int = 2048) -> None:
        super().__init__(log_path)
        self.model = model
        self.threads = threads
        self.n_ctx = n_ctx

    def command(self) -> list[str]:
        args = {
            "model": str(self.model),
            "host": "127.0.0.1",
            "port": str(self.port),
            "n_threads": str(self.threads),
            "n_threads_batch": str(self.threads),
            "n_ctx": str(self.n_ctx),
            "n_batch": "512",
            "n_ubatch": "512",
            "logits_all": "False",
            "verbose": "False",
            "interrupt_requests": "False",
        }
        command = [sys.executable, "-m", "llama_cpp.server"]
        for key, value in args.items():
            command += [f"--{key}", value]
        return command

    async def completion(self, client: httpx.AsyncClient, prompt: str, n_predict: int) -> Stream:
        """One streaming `/v1/completions` request, greedy, no repeat penalty."""
        body = {
            "prompt": tagged(prompt),
            "max_tokens": n_predict,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stream": True,
        }
        stream = Stream(sent=time.perf_counter())
        async with client.stream("POST", self.url + "/v1/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                choice = json.loads(line[len("data: ") :])["choices"][0]
                if choice.get("text"):
                    stream.chunk_times.append(now)
                    stream.text += choice["text"]
                if choice.get("finish_reason"):
                    stream.final = {"finish_reason": choice["finish_reason"]}
        return stream


async def measure(
    server: ReferenceServer, *, prompt: str, n_predict: int, concurrency: int, repeats: int
) -> dict[str, Any]:
    """Single-stream decode rate and the aggregate rate of `concurrency` streams sent at once."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
        await server.completion(client, prompt, 16)  # warm-up
        single = [await server.completion(client, prompt, n_predict) for _ in repetitions(repeats)]
        rounds = []
        for _ in repetitions(repeats):
            jobs = (server.completion(client, prompt, n_predict) for _ in range(concurrency))
            rounds.append(await asyncio.gather(*jobs))
    finished = {s.final.get("finish_reason") for r in [single, *rounds] for s in r}
    return {
        "single_client_tps": summary([s.client_tps for s in single]),
        "concurrency": concurrency,
        "aggregate_wall_tps": summary([wall_rate(streams) for streams in rounds]),
        "ttft_p50_s_concurrent": round(statistics.median(s.ttft for r in rounds for s in r), 3),
        "chunks_per_stream": sorted({len(s.chunk_times) for r in rounds for s in r}),
        "finish_reasons": sorted(str(f) for f in finished),
        "text": single[0].text,
    }
