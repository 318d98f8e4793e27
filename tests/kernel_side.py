"""Names shared by the kernel-side tests (a plain module: conftest files are not importable)."""

from __future__ import annotations

from server_harness import HanaServerProcess

MODEL_A = "tiny:a"
MODEL_B = "tiny:b"


def in_flight(server: HanaServerProcess) -> int:
    """Requests the server's runners are working on, from `/api/ps`."""
    return sum(int(entry.get("in_flight") or 0) for entry in server.ps())
