"""Running code in a kernel started by a test's Jupyter server (a plain module: conftest files
are not importable)."""

from __future__ import annotations

from typing import Any


async def execute_in_kernel(manager: Any, code: str, timeout: float = 120) -> str:
    """Start a kernel with the server's kernel manager, run `code`, return what it printed
    (fails on an exception in the kernel); the kernel is shut down after."""
    kernel_id = await manager.start_kernel()
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    printed: list[str] = []
    errors: list[str] = []

    def output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    try:
        await client.wait_for_ready(timeout=60)
        await client.execute_interactive(code, output_hook=output, timeout=timeout)
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(kernel_id, now=True)
    assert not errors, errors
    return "".join(printed)
