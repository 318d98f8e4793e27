"""The runner's command line (the contract in docs/internals.md) and the settings it produces."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SECRET_ENV = "HANA_RUNNER_SECRET"
SECRET_HEADER = "X-Hana-Secret"


@dataclass
class RunnerSettings:
    model: Path
    ctx_size: int  # cells per sequence
    parallel: int
    threads: int
    batch_size: int = 512
    embedding: bool = False
    swa_full: bool = False
    parent_pid: int | None = None
    niceness: int = 0
    gpu_layers: int = 0  # llama.cpp's n_gpu_layers (the scheduler's placement)
    main_gpu: int = 0
    stream_interval: float = 0.0  # seconds: a stream is written at most this often


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> RunnerSettings:
    parser = argparse.ArgumentParser(
        prog="python -m hana_server.runner",
        description="Serve one GGUF model over HTTP on 127.0.0.1 for the hana server. "
        f"Requests must carry the {SECRET_HEADER} header set from ${SECRET_ENV}.",
    )
    parser.add_argument("--model", type=Path, required=True, help="path of the GGUF file")
    parser.add_argument("--ctx-size", type=_positive, required=True, help="context per sequence")
    parser.add_argument("--parallel", type=_positive, default=1, help="concurrent sequences")
    parser.add_argument("--threads", type=_positive, default=1, help="compute threads")
    parser.add_argument("--batch-size", type=_positive, default=512, help="tokens per decode")
    parser.add_argument(
        "--embedding", action="store_true", help="serve /embedding, not completions"
    )
    parser.add_argument(
        "--swa-full", action="store_true", help="full-size sliding-window cache (prefix reuse)"
    )
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    parser.add_argument(
        "--niceness", type=int, default=0, help="lower the CPU priority by this much (0-19)"
    )
    parser.add_argument(
        "--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (last ones first)"
    )
    parser.add_argument("--main-gpu", type=int, default=0, help="the GPU those layers go to")
    parser.add_argument(
        "--stream-interval",
        type=float,
        default=0.0,
        help="milliseconds: a completion stream is written at most this often; tokens made "
        "faster go out together (0 = one write per step)",
    )
    args = parser.parse_args(argv)
    return RunnerSettings(
        model=args.model,
        ctx_size=args.ctx_size,
        parallel=args.parallel,
        threads=args.threads,
        batch_size=args.batch_size,
        embedding=args.embedding,
        swa_full=args.swa_full,
        parent_pid=args.parent_pid,
        niceness=min(max(args.niceness, 0), 19),
        gpu_layers=max(0, args.gpu_layers),
        main_gpu=max(0, args.main_gpu),
        stream_interval=min(max(args.stream_interval, 0.0), 1000.0) / 1000,
    )
