"""Names shared by the kernel-side tests (a plain module: conftest files are not importable)."""

from __future__ import annotations

import os
from pathlib import Path

from registry_server import LoopbackRegistry, RegistryModel, build_model
from server_harness import HanaServerProcess

MODEL_A = "tiny:a"
MODEL_B = "tiny:b"


def in_flight(server: HanaServerProcess) -> int:
    """Requests the server's runners are working on, from `/api/ps`."""
    return sum(int(entry.get("in_flight") or 0) for entry in server.ps())


#: Bytes of `big_model`'s weights: enough for progress to show mid-blob (the server writes in
#: 4 MiB batches and counts only bytes on disk).
BIG = 12_000_000


def big_model(registry: LoopbackRegistry, folder: Path, name: str = "big") -> RegistryModel:
    """A registry model whose weights are BIG random bytes: its pull has a middle to look at (it is
    never run)."""
    weights = folder / f"{name}.bin"
    weights.write_bytes(os.urandom(BIG))
    return registry.add(name, build_model(weights))
