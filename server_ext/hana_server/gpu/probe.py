"""`python -m hana_server.gpu.probe`: ask llama.cpp which GPUs it can offload to, print one JSON
line (`GpuInfo.to_json`), exit. Runs in its own short-lived process (hana_server.gpu.detect says
why): whatever GPU context it creates goes away with it.

llama-cpp-python 0.3.36 binds `llama_supports_gpu_offload` but not ggml's device registry, so the
devices and their memory are read through ctypes from the libggml it loaded
(`ggml_backend_dev_count/get/type/name/description/memory`); where that fails, `nvidia-smi`.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# ggml_backend_dev_type (ggml-backend.h): CPU, GPU, IGPU (integrated, host memory), ACCEL.
DEVICE_TYPE_GPU = 1
DEVICE_TYPE_IGPU = 2


def _ggml_library() -> ctypes.CDLL:
    """The libggml llama_cpp loaded (same file, so the same handle and registry)."""
    import llama_cpp

    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    base = Path(override) if override else Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml.so", "libggml.dylib", "ggml.dll"):
        if (base / name).exists():
            return ctypes.CDLL(str(base / name))
    raise OSError(f"no libggml in {base}")


def ggml_devices() -> tuple[str, list[dict[str, Any]]]:
    """(backend name, GPU devices in llama.cpp's order) from ggml's device registry. llama.cpp
    uses the dedicated GPUs, or the integrated ones where there is none; `index` is `main_gpu`."""
    lib = _ggml_library()
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]

    by_type: dict[int, list[dict[str, Any]]] = {DEVICE_TYPE_GPU: [], DEVICE_TYPE_IGPU: []}
    backend = ""
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        kind = lib.ggml_backend_dev_type(dev)
        if kind not in by_type:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        if not backend:
            registry = lib.ggml_backend_dev_backend_reg(dev)
            backend = (lib.ggml_backend_reg_name(registry) or b"").decode()
        by_type[kind].append(
            {
                "name": (lib.ggml_backend_dev_name(dev) or b"").decode(),
                "description": (lib.ggml_backend_dev_description(dev) or b"").decode(),
                "free": int(free.value),
                "total": int(total.value),
            }
        )
    chosen = by_type[DEVICE_TYPE_GPU] or by_type[DEVICE_TYPE_IGPU]
    return backend, [{"index": i, **d} for i, d in enumerate(chosen)]


def nvidia_smi_devices() -> list[dict[str, Any]]:
    """GPUs and their memory from nvidia-smi (MiB), the fallback where ggml's API fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.free,memory.total",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    devices = []
    for i, line in enumerate(line for line in out.splitlines() if line.strip()):
        name, free, total = (part.strip() for part in line.rsplit(",", 2))
        devices.append(
            {
                "index": i,
                "name": f"CUDA{i}",
                "description": name,
                "free": int(float(free)) << 20,
                "total": int(float(total)) << 20,
            }
        )
    return devices


def probe() -> dict[str, Any]:
    """The answer as JSON-ready data (`GpuInfo.from_json` reads it)."""
    try:
        import llama_cpp
    except Exception as error:  # a broken install: no GPU, and say why
        return {"backend": None, "reason": f"llama_cpp cannot be imported: {error}"}
    if not llama_cpp.llama_supports_gpu_offload():
        return {"backend": None, "reason": "llama.cpp reports no GPU offload (CPU build)"}
    llama_cpp.llama_backend_init()
    try:
        backend, devices = ggml_devices()
        source = "ggml"
    except (OSError, AttributeError) as error:
        sys.stderr.write(f"ggml device API unavailable ({error}); trying nvidia-smi\n")
        backend, devices, source = "CUDA", nvidia_smi_devices(), "nvidia-smi"
    if not devices:
        return {"backend": None, "reason": "llama.cpp supports GPU offload but found no GPU"}
    return {"backend": backend or "GPU", "devices": devices, "source": source}


def main() -> None:
    try:
        answer = probe()
    except Exception as error:  # always one parseable line
        answer = {"backend": None, "reason": f"GPU probe failed: {error}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no teardown of a GPU backend: exiting frees everything


if __name__ == "__main__":
    main()
