"""The placement decision: how many layers of a model go to which GPU, and what that costs on the
GPU and on the host, from the GGUF's tensor sizes and the context the runner gets.

llama.cpp's `n_gpu_layers = n` puts the LAST n repeating blocks on the GPU, and the output layer
too when n > block_count, so "all" is block_count + 1; Ollama's `num_gpu` means the same (absent
or negative: as many as fit; 0: CPU only). Each block offloaded moves its weights and its share of
the KV cache (num_ctx x parallel cells; llama.cpp keeps a layer's KV with the layer). A runner that
offloads anything also holds its own GPU context and a compute buffer there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hana_server.memory import estimate_runner_bytes

if TYPE_CHECKING:
    from hana_server.launchers.protocol import RunnerSpec
    from hana_server.store.gguf_info import GGUFInfo

log = logging.getLogger("hana.gpu")

# A runner process's own CUDA context, cuBLAS workspace and the driver's share: measured by
# bench/gpu_device.py (`context_bytes`); conservative until measured on more cards.
GPU_CONTEXT_BYTES = 512 << 20
GRAPH_BATCH = 512  # the runner's batch size (--batch-size): rows of the GPU compute buffer


@dataclass(frozen=True)
class Placement:
    """Where one runner's model goes. `gpu_layers` is llama.cpp's n_gpu_layers."""

    gpu_layers: int = 0
    device: int = 0  # main_gpu: every offloaded layer goes to this one GPU (split mode none)
    vram_bytes: int = 0  # what it takes on that GPU
    host_bytes: int = 0  # what it takes in host memory (the memory budget counts this)
    total_layers: int = 0  # block_count + 1 (output): gpu_layers == total_layers is all

    @property
    def full(self) -> bool:
        """Every layer on the GPU: the CPU does almost nothing (the thread budget skips it)."""
        return self.total_layers > 0 and self.gpu_layers >= self.total_layers

    @property
    def size(self) -> int:
        return self.host_bytes + self.vram_bytes


def requested_num_gpu(options: Mapping[str, Any], parameters: Mapping[str, Any]) -> int | None:
    """`num_gpu` of the request, else of the Modelfile; None (absent or negative) = as many as
    fit, 0 = CPU only, n = n layers."""
    value = options.get("num_gpu")
    if value is None:
        value = parameters.get("num_gpu")
    if value is None or isinstance(value, bool):
        return None
    try:
        layers = int(value)
    except (TypeError, ValueError):
        return None
    return layers if layers >= 0 else None


@dataclass(frozen=True)
class LayerCosts:
    """GPU bytes of each block (weights + KV), of the output layer, and the fixed part."""

    blocks: tuple[int, ...]  # in llama.cpp's order; the last ones are offloaded first
    output: int
    kv_per_block: int
    fixed: int  # GPU context + compute buffer, paid once anything is offloaded

    @property
    def total_layers(self) -> int:
        return len(self.blocks) + 1 if self.blocks else 0

    def vram(self, layers: int) -> int:
        """GPU bytes with the last `layers` layers offloaded (the output layer is the +1)."""
        if layers <= 0:
            return 0
        n_blocks = min(layers, len(self.blocks))
        cost = self.fixed + sum(self.blocks[len(self.blocks) - n_blocks :])
        if layers > len(self.blocks):
            cost += self.output
        return cost


def layer_costs(info: GGUFInfo, spec: RunnerSpec) -> LayerCosts:
    """Per-layer GPU bytes of `info` run with `spec` (num_ctx x parallel cells of KV)."""
    n_blocks = info.block_count
    if n_blocks <= 0:
        return LayerCosts((), 0, 0, 0)
    cells = spec.ctx_size * spec.parallel
    kv_per_block = info.kv_bytes_per_token() * cells // n_blocks
    weights = info.layer_bytes
    if len(weights) != n_blocks or not any(weights):
        # No usable tensor table: split the file evenly (over-counts: it includes embeddings).
        weights = (max(0, info.file_size - info.output_bytes) // n_blocks,) * n_blocks
    blocks = tuple(w + kv_per_block for w in weights)
    batch = max(GRAPH_BATCH, spec.parallel)
    if spec.embedding:
        batch = max(batch, spec.ctx_size)
    # Compute buffer: f32 logits and a few activations per row of the batch.
    graph = 4 * batch * (info.vocab_size + 4 * max(info.embedding_length, 1))
    return LayerCosts(blocks, info.output_bytes, kv_per_block, GPU_CONTEXT_BYTES + graph)


def _fit(costs: LayerCosts, wanted: int, free: int) -> int:
    """Most layers, up to `wanted`, whose GPU bytes stay within `free`."""
    layers = min(wanted, costs.total_layers)
    while layers > 0 and costs.vram(layers) > free:
        layers -= 1
    return layers


def place(
    info: GGUFInfo,
    spec: RunnerSpec,
    num_gpu: int | None,
    free: Mapping[int, int],
) -> Placement:
    """The placement of `info` run with `spec`, given each GPU's free bytes for hana (`free`,
    device index -> bytes, already less what other runners hold): as many layers as fit on the
    GPU with the most room, or `num_gpu` layers at most. An empty `free` means CPU only."""
    host_all = estimate_runner_bytes(info, spec)
    costs = layer_costs(info, spec)
    wanted = costs.total_layers if num_gpu is None else min(num_gpu, costs.total_layers)
    best = Placement(host_bytes=host_all, total_layers=costs.total_layers)
    if wanted <= 0 or not free:
        return best
    for device, room in sorted(free.items(), key=lambda item: (-item[1], item[0])):
        layers = _fit(costs, wanted, room)
        if layers > best.gpu_layers:
            vram = costs.vram(layers)
            moved = vram - costs.fixed  # weights and KV that leave host memory
            best = Placement(
                gpu_layers=layers,
                device=device,
                vram_bytes=vram,
                host_bytes=max(host_all - moved, 0),
                total_layers=costs.total_layers,
            )
    if num_gpu is not None and best.gpu_layers < wanted:
        log.info(
            "num_gpu %d asked for %s: %d layers fit in the free GPU memory",
            num_gpu,
            info.path.name,
            best.gpu_layers,
        )
    return best
