"""GPU offload measured on a GPU machine in one run: hana's runner code on CUDA versus all-CPU.

Needs only Python 3.12 with numpy (the GPU machine has no network, no pip packages beyond numpy and
jinja2): llama-cpp-python's Python package and llama.cpp's CUDA libraries come in the bundle that
`make gpu-bundle` prepares (.make/gpu-bundle, ~44 MiB), the models are generated here (a numpy
GGUF writer, Q8_0 weights, llama architecture), and the measurements drive hana's own runner code
(`ServingModel`, `CompletionEngine`, `LlamaLog`) and hana's placement and probe modules.

    python3 bench/gpu_device.py --bundle .make/gpu-bundle --out "$OUT"

What it measures (JSON on stdout and in OUT/gpu_device.json):
- detection: `python -m hana_server.gpu.probe` (ggml's device registry through ctypes);
- single-stream and 4-parallel decode tokens/s, all layers on the GPU vs all on the CPU (16 cores),
  plus half the layers on the GPU and full offload with 16 threads instead of 1;
- VRAM: hana's placement estimate, the GPU buffers the runner reports (its size_vram) and what
  nvidia-smi sees the process take (the difference calibrates GPU_CONTEXT_BYTES);
- two models at once on one GPU, with hana's accounting given a budget that fits the first fully
  and the second only in part: layers placed, memory used versus the budget, tokens/s of both.
Without a GPU (no bundle, no nvidia-smi) the GPU parts are skipped and a tiny model runs on the CPU
with the local llama_cpp: that is how this script is tested on a CPU-only machine.

Each measurement runs in a child process of this script (`child` subcommand), as hana's runners are
processes: the child loads, says so, waits for "go" on stdin, measures, prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gguf_writer import SHAPES, gguf_info_of, write_gguf  # noqa: E402

# ----------------------------------------------------------------------------- the child


def child(args: argparse.Namespace) -> None:
    """Load one model with hana's runner code, report, wait for "go", measure, report, exit."""
    import asyncio

    from hana_server.runner.model import LlamaLog
    from hana_server.runner.serving import ServingModel
    from hana_server.runner.settings import RunnerSettings

    settings = RunnerSettings(
        model=Path(args.model),
        ctx_size=args.ctx,
        parallel=args.parallel,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        llama_log = LlamaLog()
        llama_log.install()
        started = time.monotonic()
        serving = await asyncio.to_thread(
            ServingModel.load,
            settings,
            loop,
            llama_log=llama_log,
            on_progress=lambda _p: None,
            should_abort=lambda: False,
            on_engine_crash=lambda message: print(json.dumps({"crash": message}), flush=True),
        )
        loaded = {
            "event": "loaded",
            "load_seconds": round(time.monotonic() - started, 2),
            "gpu_layers_offloaded": llama_log.gpu_layers,
            "vram_bytes": llama_log.gpu_buffer_bytes,
            "host_buffer_bytes": llama_log.buffer_bytes,
        }
        print(json.dumps(loaded), flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            os._exit(0)  # the parent gave up (or died): measure nothing

        async def one(prompt: str, tokens: int = args.tokens) -> dict[str, Any]:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            options = {"num_predict": tokens, "temperature": 0}
            body = {"prompt": prompt, "options": options}
            sequence = serving.new_completion(body, queue.put_nowait)
            serving.engine.submit(sequence)
            while True:
                message = await queue.get()
                if "done" in message or "error" in message:
                    return message

        prompts = [f"Stream {i}: the quick brown fox jumps over the lazy dog." for i in range(8)]
        await one(prompts[0], 8)  # warm-up (CUDA graphs, caches)
        results = {}
        for streams in (1, args.parallel) if args.parallel > 1 else (1,):
            start = time.monotonic()
            done = await asyncio.gather(*(one(p) for p in prompts[:streams]))
            wall = time.monotonic() - start
            tokens = sum(int(d.get("eval_count", 0)) for d in done)
            results[f"streams_{streams}"] = {
                "tokens": tokens,
                "wall_seconds": round(wall, 3),
                "tokens_per_second": round(tokens / wall, 1),
                "per_stream_eval_tps": [
                    round(d["eval_count"] / (d["eval_duration"] / 1e9), 1)
                    for d in done
                    if d.get("eval_duration")
                ],
                "errors": [d["error"] for d in done if "error" in d],
            }
        print(json.dumps({**loaded, "event": "result", **results}), flush=True)
        await asyncio.to_thread(serving.close, 5.0)

    asyncio.run(main())
    os._exit(0)


# ---------------------------------------------------------------------------- the parent


class Child:
    """One measuring child process."""

    def __init__(self, env: dict[str, str], model: Path, **opts: Any) -> None:
        command = [sys.executable, __file__, "child", "--model", str(model)]
        for key, value in opts.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        self.opts = opts
        self.proc = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> dict[str, Any]:
        """The child's next JSON line; a child that died or gave an error line is killed and
        raises."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        while line and not line.startswith("{"):
            line = self.proc.stdout.readline()
        message = json.loads(line) if line else None
        if message is None or "crash" in message:
            self.proc.kill()
            code = self.proc.wait()
            raise RuntimeError(f"child {self.opts} failed (exit {code}): {message}")
        return message

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> dict[str, Any]:
        result = self.read()
        self.proc.wait(timeout=60)
        return result


def gpu_used() -> int | None:
    """Bytes in use on GPU 0 (nvidia-smi), None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return int(float(out)) << 20 if out else None


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out.splitlines()[0] if out else None


def run_one(env: dict[str, str], model: Path, **opts: Any) -> dict[str, Any]:
    """Load in a child, note the GPU memory it took, measure."""
    before = gpu_used()
    runner = Child(env, model, **opts)
    runner.read()  # loaded
    after = gpu_used()
    runner.go()
    result = runner.finish()
    if before is not None and after is not None:
        result["nvidia_smi_process_bytes"] = after - before
    return {"options": opts, **result}


def prepare_libs(bundle: Path, work: Path) -> Path | None:
    """Unpack the CUDA libraries from the bundle's parts; None where there are none."""
    parts = sorted(bundle.glob("gpu-libs.tgz.part-*"))
    if not parts:
        return None
    target = work / "gpu-libs"
    if not any(target.rglob("libllama.so")):
        target.mkdir(parents=True, exist_ok=True)
        joined = work / "gpu-libs.tgz"
        with joined.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with tarfile.open(joined) as tar:
            tar.extractall(target, filter="data")
        joined.unlink()
    return next(target.rglob("libllama.so")).parent  # the tar may hold a bin/ folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("child")
    c.add_argument("--model", required=True)
    c.add_argument("--gpu-layers", type=int, default=0)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--parallel", type=int, default=1)
    c.add_argument("--ctx", type=int, default=1024)
    c.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--bundle", type=Path, default=ROOT / ".make" / "gpu-bundle")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/hana-gpu-bench"))
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU parts")
    parser.add_argument("--tokens", type=int, default=128, help="decoded per stream")
    args = parser.parse_args()
    if args.command == "child":
        child(args)
        return

    report: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
    args.work.mkdir(parents=True, exist_ok=True)
    has_gpu = not args.cpu_only and shutil.which("nvidia-smi") is not None
    libs = prepare_libs(args.bundle, args.work) if has_gpu else None
    use_gpu = libs is not None
    report["gpu"] = gpu_name() if use_gpu else None
    if not use_gpu:
        report["gpu_skipped"] = "no GPU bundle or no nvidia-smi: CPU-only check with a tiny model"

    # Children import hana's runner code and llama_cpp: the bundle's with the CUDA libraries, else
    # the local one (the bundle's package has no libraries of its own).
    paths = [str(ROOT), str(ROOT / "server_ext")]
    if libs is not None and (args.bundle / "py" / "llama_cpp").is_dir():
        paths.insert(0, str(args.bundle / "py"))
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + inherited)}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # as hana's runners
    if libs is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(libs)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libs), env.get("LD_LIBRARY_PATH", "")])
    sys.path[:0] = paths

    from hana_server.gpu.placement import GPU_CONTEXT_BYTES, layer_costs, place

    probe = subprocess.run(
        [sys.executable, "-m", "hana_server.gpu.probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        report["probe"] = json.loads(probe.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report["probe"] = {"failed": probe.returncode, "stderr": probe.stderr[-2000:]}
    free = {d["index"]: d["free"] for d in report["probe"].get("devices", [])}
    if use_gpu and not free:  # the probe failed: measure anyway, with nvidia-smi's numbers
        from hana_server.gpu.probe import nvidia_smi_devices

        try:
            free = {d["index"]: d["free"] for d in nvidia_smi_devices()}
            report["free_from"] = "nvidia-smi"
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            report["free_from"] = f"nothing: {error}"

    shape_a, shape_b = (
        (SHAPES["bench"], SHAPES["bench-small"]) if use_gpu else (SHAPES["tiny"],) * 2
    )
    tokens = args.tokens if use_gpu else min(args.tokens, 16)
    started = time.monotonic()
    model_a, model_b = args.work / "model-a.gguf", args.work / "model-b.gguf"
    sizes_a = write_gguf(model_a, shape_a, seed=1)
    sizes_b = write_gguf(model_b, shape_b, seed=2)
    report["models"] = {
        "a": {"bytes": model_a.stat().st_size, "layers": shape_a.n_layers},
        "b": {"bytes": model_b.stat().st_size, "layers": shape_b.n_layers},
        "generate_seconds": round(time.monotonic() - started, 1),
    }
    info_a = gguf_info_of(model_a, shape_a, sizes_a)
    info_b = gguf_info_of(model_b, shape_b, sizes_b)
    ctx, parallel = 1024, 4
    # What placement reads of a RunnerSpec (hana_server.launchers would import httpx).
    spec = SimpleNamespace(model_path=model_a, ctx_size=ctx, parallel=parallel, embedding=False)
    spec_b = SimpleNamespace(model_path=model_b, ctx_size=ctx, parallel=parallel, embedding=False)
    cores = os.cpu_count() or 1
    runs: dict[str, Any] = {}
    common = {"ctx": ctx, "parallel": parallel, "tokens": tokens}

    report["runs"] = runs
    args.out.mkdir(parents=True, exist_ok=True)

    def step(name: str, measure: Any, into: dict[str, Any] = runs) -> None:
        """Run one measurement; a failure is recorded, not fatal, and the report is saved after
        every step (a run cut short by the device's time limit still returns what it has)."""
        try:
            into[name] = measure()
        except Exception as error:
            into[name] = {"error": repr(error)}
        (args.out / "gpu_device.json").write_text(json.dumps(report, indent=2) + "\n")

    if use_gpu:  # the GPU figures first: they are what the device run is for
        full = place(info_a, spec, None, free)
        report["placement_a"] = {
            "gpu_layers": full.gpu_layers,
            "total_layers": full.total_layers,
            "estimated_vram_bytes": full.vram_bytes,
            "estimated_host_bytes": full.host_bytes,
            "gpu_context_bytes": GPU_CONTEXT_BYTES,
        }
        layers = full.gpu_layers
        single = {"ctx": ctx, "parallel": 1, "tokens": tokens}
        step(
            "gpu_full_1_thread",
            lambda: run_one(env, model_a, gpu_layers=layers, threads=1, **common),
        )
        step(
            "gpu_full_16_threads",
            lambda: run_one(env, model_a, gpu_layers=layers, threads=cores, **single),
        )
        half = full.total_layers // 2
        step("gpu_half", lambda: run_one(env, model_a, gpu_layers=half, threads=cores, **single))
        measured = runs["gpu_full_1_thread"]
        if "nvidia_smi_process_bytes" in measured:
            report["gpu_context_measured_bytes"] = (
                measured["nvidia_smi_process_bytes"] - measured["vram_bytes"]
            )
        step(
            "two_models",
            lambda: two_models(env, info_a, info_b, spec, spec_b, common, layer_costs),
            report,
        )
    step("cpu", lambda: run_one(env, model_a, gpu_layers=0, threads=cores, **common))
    print(json.dumps(report, indent=2))


def two_models(
    env: dict[str, str],
    info_a: SimpleNamespace,
    info_b: SimpleNamespace,
    spec_a: Any,
    spec_b: Any,
    common: dict[str, Any],
    layer_costs: Any,
) -> dict[str, Any]:
    """Two runners on one GPU under a budget that fits A entirely and B only in part, placed and
    counted as hana's scheduler does (A's measured buffers + the context, then B from the rest)."""
    from hana_server.gpu.placement import GPU_CONTEXT_BYTES, place

    costs_a, costs_b = layer_costs(info_a, spec_a), layer_costs(info_b, spec_b)
    budget = costs_a.vram(costs_a.total_layers) + costs_b.vram(costs_b.total_layers // 2)
    before = gpu_used()
    placed_a = place(info_a, spec_a, None, {0: budget})
    a = Child(env, info_a.path, gpu_layers=placed_a.gpu_layers, threads=1, **common)
    loaded_a = a.read()
    held_a = loaded_a["vram_bytes"] + GPU_CONTEXT_BYTES  # what the scheduler then counts
    placed_b = place(info_b, spec_b, None, {0: max(0, budget - held_a)})
    b = Child(env, info_b.path, gpu_layers=placed_b.gpu_layers, threads=8, **common)
    loaded_b = b.read()
    both = gpu_used()
    a.go()
    b.go()
    result_a, result_b = a.finish(), b.finish()
    used = both - before if both is not None and before is not None else None
    return {
        "budget_bytes": budget,
        "a": {"placed_layers": placed_a.gpu_layers, "of": placed_a.total_layers, **result_a},
        "b": {"placed_layers": placed_b.gpu_layers, "of": placed_b.total_layers, **result_b},
        "counted_bytes": held_a + loaded_b["vram_bytes"] + GPU_CONTEXT_BYTES,
        "nvidia_smi_both_bytes": used,
        "within_budget": used is not None and used <= budget,
    }


if __name__ == "__main__":
    main()
