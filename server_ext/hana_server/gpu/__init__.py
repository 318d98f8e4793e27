"""GPU offload: which GPUs llama.cpp can use (`detect`), and how many layers of a model go there
(`placement`). The server process never loads llama.cpp or a GPU driver itself: detection runs in a
short-lived subprocess (`python -m hana_server.gpu.probe`), so no CUDA context (hundreds of MiB of
GPU memory per process) is ever held by the server.
"""

from hana_server.gpu.detect import (
    NO_GPU,
    DetectedGpu,
    FixedGpu,
    GpuDevice,
    GpuInfo,
    GpuProvider,
)
from hana_server.gpu.placement import Placement, place, requested_num_gpu

__all__ = [
    "NO_GPU",
    "DetectedGpu",
    "FixedGpu",
    "GpuDevice",
    "GpuInfo",
    "GpuProvider",
    "Placement",
    "place",
    "requested_num_gpu",
]
