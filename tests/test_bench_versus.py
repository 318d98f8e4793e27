"""The llama.cpp comparison's own logic: which part of the sdist is built, when a build counts as
done, and how interleaved rounds become ratios and goals (the build and the runs themselves are
`make bench`, not tests)."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import llama_cpp_build
import versus


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_only_vendor_llama_cpp_is_extracted(tmp_path: Path) -> None:
    sdist = _sdist(
        tmp_path / "llama_cpp_python-9.9.9.tar.gz",
        {
            "llama_cpp_python-9.9.9/pyproject.toml": b"[project]",
            "llama_cpp_python-9.9.9/vendor/llama.cpp/CMakeLists.txt": b"project(llama)",
            "llama_cpp_python-9.9.9/vendor/llama.cpp/tools/server/server.cpp": b"int main(){}",
        },
    )
    source = llama_cpp_build._extract_vendor(sdist, tmp_path)
    assert source == tmp_path / "source"
    assert (source / "CMakeLists.txt").read_bytes() == b"project(llama)"
    assert (source / "tools/server/server.cpp").exists()
    assert not (source / "pyproject.toml").exists()
    assert not (tmp_path / "source.partial").exists()


def test_a_build_counts_only_with_its_stamp_and_both_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_cpp_build, "CACHE_ROOT", tmp_path)
    build = llama_cpp_build.build_dir("9.9.9")
    assert build == tmp_path / "llama.cpp-9.9.9" / "build"
    (build / "bin").mkdir(parents=True)
    for tool in llama_cpp_build.TARGETS:
        (build / "bin" / tool).write_bytes(b"")
    assert llama_cpp_build.binaries("9.9.9") is None  # an interrupted build has no stamp
    (build / "hana-built").write_text("9.9.9\n")
    found = llama_cpp_build.binaries("9.9.9")
    assert found == {tool: build / "bin" / tool for tool in llama_cpp_build.TARGETS}
    (build / "bin" / "llama-bench").unlink()
    assert llama_cpp_build.binaries("9.9.9") is None


def test_ratios_are_medians_of_per_round_ratios() -> None:
    rates = {
        "llama_bench_tg": [40.0, 20.0, 40.0],
        "llama_server_1": [30.0, 15.0, 32.0],
        "hana_1": [38.0, 19.0, 30.0],
        "llama_server_4": [50.0, 25.0, 55.0],
        "hana_4": [55.0, 26.0, 50.0],
        "hana_two_models": [48.0, 20.0, 33.0],
        "raw_1": [37.0, 18.0, 36.0],
    }
    runs = {name: [{"tps": value} for value in values] for name, values in rates.items()}
    runs["hana_1"][0]["server_tps"] = 39.0
    for run in runs["hana_1"][1:]:
        run["server_tps"] = 20.0
    load = {name: [0.5, 1.5, 2.5] for name in rates}
    result = versus.analyse({"runs": runs, "foreign_cores": load})

    hana_vs_tg = result["ratios"]["hana_1_vs_llama_bench_tg"]
    assert hana_vs_tg["runs"] == [0.95, 0.95, 0.75]
    assert hana_vs_tg["median"] == 0.95  # the ratio of the medians (38/40) would hide round 3
    assert result["goals"]["hana_1_vs_llama_bench_tg"]["met"] is True
    assert result["ratios"]["hana_4_vs_llama_server_4"]["median"] == pytest.approx(1.04, abs=0.01)
    two = result["ratios"]["hana_two_models_vs_hana_1"]
    assert two["median"] == 1.1  # rounds 1.26, 1.05, 1.1
    assert result["goals"]["hana_two_models_vs_hana_1"]["met"] is False
    assert result["tokens_per_second"]["llama_server_1"]["median"] == 30.0
    assert result["server_reported_tps"] == {
        "hana_1": {"median": 20.0, "min": 20.0, "max": 39.0, "runs": [39.0, 20.0, 20.0]}
    }
    assert result["foreign_cores_median"] == 1.5
