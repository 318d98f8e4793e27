"""bench/gpu_device.py on this CPU-only machine: its numpy GGUF writer produces what hana's
GGUFInfo reads (so its placement figures are hana's), and its CPU-only path runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hana_server.gpu.placement import place
from hana_server.launchers.protocol import RunnerSpec
from hana_server.store.gguf_info import GGUFInfo

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import gguf_writer  # noqa: E402


def test_the_generated_gguf_reads_as_the_script_says(tmp_path: Path) -> None:
    shape = gguf_writer.SHAPES["tiny"]
    path = tmp_path / "tiny.gguf"
    sizes = gguf_writer.write_gguf(path, shape, seed=3)
    info = GGUFInfo.read(path)
    assert (info.architecture, info.block_count, info.file_type) == ("llama", 4, "Q8_0")
    assert (info.head_count, info.head_count_kv, info.vocab_size) == (4, 2, shape.n_vocab)
    assert info.layer_bytes == tuple(sizes["layer_bytes"])
    assert info.output_bytes == sizes["output_bytes"]
    # The script's stand-in for GGUFInfo gives hana's placement the same answers.
    stand_in = gguf_writer.gguf_info_of(path, shape, sizes)
    assert stand_in.kv_bytes_per_token() == info.kv_bytes_per_token()
    spec = RunnerSpec(path, 1024, 4, embedding=False, swa_full=False)
    for free in (0, 600 << 20, 700 << 20, 80 << 30):
        assert place(stand_in, spec, None, {0: free}) == place(info, spec, None, {0: free})  # type: ignore[arg-type]


@pytest.mark.timeout(240)
def test_the_cpu_only_path_runs_and_skips_the_gpu(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH / "gpu_device.py"), "--out", str(tmp_path)]
    command += ["--work", str(tmp_path / "work"), "--cpu-only", "--tokens", "8"]
    subprocess.run(command, check=True, capture_output=True, timeout=220)
    report = json.loads((tmp_path / "gpu_device.json").read_text())
    assert report["gpu"] is None and "CPU-only" in report["gpu_skipped"]
    assert report["probe"]["backend"] is None
    cpu = report["runs"]["cpu"]
    assert cpu["event"] == "result" and cpu["vram_bytes"] == 0
    assert cpu["streams_1"]["tokens"] == 8 and cpu["streams_4"]["tokens"] == 32
    assert not cpu["streams_1"]["errors"] and not cpu["streams_4"]["errors"]
    assert "two_models" not in report
