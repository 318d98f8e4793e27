#!/bin/sh
# Prepare what bench/gpu_device.py needs on the GPU machine, in .make/gpu-bundle (git ignores it;
# the device tool sends it with `carry`): llama.cpp's CUDA libraries (the parts in
# ../shared/gpu, 42 MiB) and llama-cpp-python's Python package without its CPU libraries (1.5 MiB).
# The GPU machine has numpy and jinja2 but no pip packages of ours and no network.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
PARTS=${GPU_LIBS:-$ROOT/../shared/gpu/llama-cpp-0.3.36-cuda13-sm90}
[ -d "$PARTS" ] || PARTS=/work/shared/gpu/llama-cpp-0.3.36-cuda13-sm90
OUT=$ROOT/.make/gpu-bundle
rm -rf "$OUT"
mkdir -p "$OUT/py"
cp "$PARTS"/gpu-libs.tgz.part-* "$OUT/"
# The parts must match the checksums their README lists.
(cd "$OUT" && grep -E '^[0-9a-f]{64}  gpu-libs' "$PARTS/README.md" | sha256sum -c --quiet)
PKG=$("$PY" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("llama_cpp").origin))')
cp -r "$PKG" "$OUT/py/llama_cpp"
# llama_cpp imports typing_extensions and diskcache (pure Python); the GPU machine lacks them.
"$PY" - "$OUT/py" <<'PY'
import os, shutil, sys
import diskcache, typing_extensions
shutil.copy(typing_extensions.__file__, sys.argv[1])
shutil.copytree(os.path.dirname(diskcache.__file__), os.path.join(sys.argv[1], "diskcache"))
PY
rm -rf "$OUT/py/llama_cpp/lib" "$OUT/py/llama_cpp/server"
find "$OUT/py" -name __pycache__ -prune -exec rm -rf {} +
du -sh "$OUT"
