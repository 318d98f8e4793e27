"""llama.cpp's own `llama-server` and `llama-bench`, built once from the very source that the
installed llama-cpp-python vendors, and cached under ~/.cache/hana-bench/llama.cpp-<version>/.

The source is the llama-cpp-python sdist of the installed version (pip's ordinary client, from
PyPI), whose vendor/llama.cpp is the engine hana runs. CPU only, Release, no curl, only the two
targets, and no web UI (nothing is fetched at build time). `make bench` runs this file;
bench/run.py imports `binaries`.
A finished build is recognised by a stamp file, so later runs cost nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

TARGETS = ("llama-server", "llama-bench")
CACHE_ROOT = Path(os.environ.get("HANA_BENCH_CACHE", Path.home() / ".cache" / "hana-bench"))


def source_version() -> str:
    return version("llama_cpp_python")


def build_dir(ver: str | None = None) -> Path:
    return CACHE_ROOT / f"llama.cpp-{ver or source_version()}" / "build"


def binaries(ver: str | None = None) -> dict[str, Path] | None:
    """The built tools, or None when `ensure_built` has not run to the end."""
    build = build_dir(ver)
    if not (build / "hana-built").exists():
        return None
    found = {name: build / "bin" / name for name in TARGETS}
    return found if all(path.exists() for path in found.values()) else None


def _sdist(ver: str, into: Path) -> Path:
    name = f"llama_cpp_python-{ver}.tar.gz"
    path = into / name
    if not path.exists():
        requirement = f"llama-cpp-python=={ver}"
        download = [sys.executable, "-m", "pip", "download", requirement, "--no-deps"]
        subprocess.run([*download, "--no-binary", ":all:", "-d", str(into)], check=True)
    return path


def _extract_vendor(sdist: Path, into: Path) -> Path:
    """Only vendor/llama.cpp of the sdist, into <into>/source."""
    source = into / "source"
    if (source / "CMakeLists.txt").exists():
        return source
    partial = into / "source.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        prefix = archive.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix) :]
        archive.extractall(partial, members=[m for m in members if m.name], filter="data")
    partial.rename(source)
    return source


def ensure_built(ver: str | None = None) -> dict[str, Path]:
    ver = ver or source_version()
    found = binaries(ver)
    if found:
        return found
    root = build_dir(ver).parent
    root.mkdir(parents=True, exist_ok=True)
    source = _extract_vendor(_sdist(ver, root), root)
    build = build_dir(ver)
    configure = [
        "cmake", "-S", str(source), "-B", str(build),
        "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_CUDA=OFF",
        "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
    ]  # fmt: skip
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    subprocess.run(configure, check=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    subprocess.run(
        ["cmake", "--build", str(build), "--config", "Release", "-j", jobs, "--target", *TARGETS],
        check=True,
    )
    (build / "hana-built").write_text(ver + "\n")
    found = binaries(ver)
    assert found is not None
    return found


if __name__ == "__main__":
    for tool, path in ensure_built().items():
        print(f"{tool}: {path}")
