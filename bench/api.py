"""hana measured through its HTTP API: `hana serve` as a subprocess, streaming `/api/generate`.

Every request is raw (no template) with temperature 0 and a fixed `num_predict`, and the prompt
starts with a tag unique to the request so no slot's prompt cache can shorten a prefill. The
prompt is chosen so the greedy continuation never ends early; `eval_count` is checked anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from report import BUDGET_SECONDS, repetitions, summary

HANA = Path(sys.executable).parent / "hana"
_tags = itertools.count(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tagged(prompt: str) -> str:
    """The prompt behind a tag no other request of this run has (defeats prompt caching)."""
    return f"[{next(_tags):04d}] {prompt}"


@dataclass
class Stream:
    """Client-side timing of one streamed completion."""

    sent: float
    chunk_times: list[float] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def first(self) -> float:
        return self.chunk_times[0]

    @property
    def last(self) -> float:
        return self.chunk_times[-1]

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def tokens(self) -> int:
        """Generated tokens: the server's count when it gives one, else one per chunk."""
        return int(self.final.get("eval_count") or len(self.chunk_times))

    @property
    def client_tps(self) -> float:
        """Tokens after the first per second between the first and the last chunk."""
        return (len(self.chunk_times) - 1) / (self.last - self.first)


def steady_rate(streams: Sequence[Stream]) -> float:
    """Tokens per second while every stream was generating: chunks that arrived between the last
    stream's first chunk and the first stream's last chunk, over that window's length. This
    leaves out ramp-up (queueing, prefills) and ramp-down, as the raw batched loop does."""
    start = max(s.first for s in streams)
    end = min(s.last for s in streams)
    if end <= start:
        return float("nan")
    chunks = sum(1 for s in streams for t in s.chunk_times if start < t <= end)
    return chunks / (end - start)


def wall_rate(streams: Sequence[Stream]) -> float:
    """All generated tokens over the time from the first request sent to the last chunk."""
    return sum(s.tokens for s in streams) / (
        max(s.last for s in streams) - min(s.sent for s in streams)
    )


def server_decode_rate(stream: Stream) -> float:
    """Decode tokens/s from the server's own timing: eval_duration runs from the first token to
    the last, so it covers eval_count - 1 decode steps."""
    return (stream.final["eval_count"] - 1) / (stream.final["eval_duration"] / 1e9)


def round_stats(rounds: Sequence[Sequence[Stream]]) -> dict[str, Any]:
    """Rates of repeated rounds of concurrent streams: the steady aggregate (compared with the
    raw batched loop), the wall aggregate (prefills included), per-stream decode rates from the
    server's own `eval_duration` (first to last token: eval_count - 1 steps) and TTFT."""
    per_stream = [server_decode_rate(s) for r in rounds for s in r]
    return {
        "aggregate_tps": summary([steady_rate(r) for r in rounds]),
        "wall_tps": summary([wall_rate(r) for r in rounds]),
        "server_per_stream_tps": summary(per_stream),
        "client_per_stream_tps": summary([s.client_tps for r in rounds for s in r]),
        "ttft_p50_s": round(statistics.median(s.ttft for r in rounds for s in r), 3),
    }


class ServerProcess(ABC):
    """A server subprocess on a free loopback port, in its own session, logging to a file."""

    name = "server"
    ready_path = "/"

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that starts this server on `self.port`."""

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until it answers; returns the seconds that took."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer in {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM (hana serve terminates its runners), SIGKILL to the session if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HanaServer(ServerProcess):
    """`hana serve` with its own store; 8 parallel sequences per model."""

    name = "hana serve"

    def __init__(self, models_dir: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(log_path)
        self.env.update(
            {
                "HANA_MODELS": str(models_dir),
                "HANA_HOST": f"127.0.0.1:{self.port}",
                "HANA_NUM_PARALLEL": "8",
                "HANA_KEEP_ALIVE": "30m",
                "HANA_MAX_LOADED_MODELS": "3",
                "HANA_REGISTER_DEFAULT_MODEL": "0",
                **(env or {}),
            }
        )

    def command(self) -> list[str]:
        return [str(HANA), "serve", "--port", str(self.port)]

    def setup(self) -> None:
        """`hana setup` with this server's store: registers gemma3:270m from its package."""
        subprocess.run([str(HANA), "setup"], env=self.env, check=True, capture_output=True)

    def create(self, name: str, gguf: Path) -> None:
        """`hana create` from a Modelfile naming a GGUF (the server must be running)."""
        modelfile = self.log_path.with_suffix(f".{name.replace(':', '_')}.Modelfile")
        modelfile.write_text(f"FROM {gguf}\n")
        subprocess.run(
            [str(HANA), "create", name, "-f", str(modelfile)],
            env=self.env,
            check=True,
            capture_output=True,
        )


class HanaBench:
    """The measurements, all through one server's `/api/generate`."""

    def __init__(self, url: str, prompt: str, n_predict: int) -> None:
        self.url = url
        self.prompt = prompt
        self.n_predict = n_predict

    async def generate(
        self,
        client: httpx.AsyncClient,
        model: str,
        n_predict: int | None = None,
        started: asyncio.Event | None = None,
    ) -> Stream:
        body = {
            "model": model,
            "prompt": tagged(self.prompt),
            "raw": True,
            "stream": True,
            "keep_alive": "30m",
            "options": {"temperature": 0, "num_predict": n_predict or self.n_predict, "seed": 1},
        }
        stream = Stream(sent=time.perf_counter())
        async with client.stream("POST", self.url + "/api/generate", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line:
                    continue
                now = time.perf_counter()
                message = json.loads(line)
                if "error" in message:
                    raise RuntimeError(f"hana: {message['error']}")
                if message.get("response"):
                    stream.chunk_times.append(now)
                    stream.text += message["response"]
                    if started is not None and len(stream.chunk_times) == 1:
                        started.set()
                if message.get("done"):
                    stream.final = message
        return stream

    def client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        return httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits)

    async def cold_load(self, model: str) -> dict[str, Any]:
        """The first request of a model on a fresh server: load_duration and wall time."""
        async with self.client() as client:
            stream = await self.generate(client, model, n_predict=8)
        return {
            "load_duration_s": round(stream.final["load_duration"] / 1e9, 3),
            "wall_to_first_token_s": round(stream.ttft, 3),
            "wall_total_s": round(stream.last - stream.sent, 3),
        }

    async def round(self, client: httpx.AsyncClient, model: str, n: int) -> list[Stream]:
        """`n` streams sent at once; each must produce exactly `n_predict` tokens."""
        streams = await asyncio.gather(*(self.generate(client, model) for _ in range(n)))
        check_lengths(streams, self.n_predict)
        return list(streams)

    async def ttft(self, model: str, probes: int, background: int) -> dict[str, Any]:
        """Time to first token of short requests sent one by one while `background` long
        streams are decoding (0 = idle server)."""
        async with self.client() as client:
            started = [asyncio.Event() for _ in range(background)]
            tasks = [
                asyncio.create_task(self.generate(client, model, 4 * self.n_predict, event))
                for event in started
            ]
            try:
                await asyncio.gather(*(event.wait() for event in started))
                streams = [await self.generate(client, model, n_predict=2) for _ in range(probes)]
                still_running = all(not task.done() for task in tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "ttft_p50_s": round(statistics.median(s.ttft for s in streams), 4),
            "ttft_runs_s": [round(s.ttft, 4) for s in streams],
            "prompt_eval_p50_s": round(
                statistics.median(s.final["prompt_eval_duration"] / 1e9 for s in streams), 4
            ),
            "background_streams": background,
            "background_kept_decoding": still_running,
        }

    async def two_models(self, models: Sequence[str], repeats: int) -> dict[str, Any]:
        """One stream on the first model alone, then one on each model at once, alternating
        `repeats` times, so both numbers of a pair see the same machine. Also the compute
        threads `/api/ps` shows while all models are generating."""
        alone: list[float] = []
        both: list[float] = []
        threads: dict[str, int] = {}
        async with self.client() as client:
            for model in models:
                await self.generate(client, model, n_predict=4)  # loaded and warm
            for _ in repetitions(repeats, budget=2 * BUDGET_SECONDS):
                alone.append(steady_rate(await self.round(client, models[0], 1)))
                started = [asyncio.Event() for _ in models]
                tasks = [
                    asyncio.create_task(self.generate(client, model, started=event))
                    for model, event in zip(models, started, strict=True)
                ]
                await asyncio.gather(*(event.wait() for event in started))
                await asyncio.sleep(0.2)  # thread changes apply between two decode steps
                threads = await self.threads(client)
                streams = await asyncio.gather(*tasks)
                check_lengths(streams, self.n_predict)
                both.append(steady_rate(streams))
        return {
            "alone_tps": summary(alone),
            "both_tps": summary(both),
            "both_vs_alone": summary([b / a for a, b in zip(alone, both, strict=True)]),
            "threads_while_both_busy": threads,
        }

    async def threads(self, client: httpx.AsyncClient) -> dict[str, int]:
        """Compute threads of each loaded runner, from `/api/ps`."""
        response = await client.get(self.url + "/api/ps")
        return {m["name"]: m.get("threads") for m in response.json().get("models", [])}


def check_lengths(streams: Sequence[Stream], n_predict: int) -> None:
    """Every measured stream must have produced exactly `n_predict` tokens."""
    for stream in streams:
        count = stream.final.get("eval_count")
        if count != n_predict:
            raise RuntimeError(
                f"a stream produced {count} tokens instead of {n_predict} "
                f"(done_reason {stream.final.get('done_reason')}); pick a longer-running prompt"
            )
