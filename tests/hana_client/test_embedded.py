"""The embedded server is a child process: it answers, and it exits when the kernel that started
it dies, even by SIGKILL (no atexit runs then)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from server_harness import free_port, wait_for

# A stand-in kernel: finds no server, so it starts the embedded one, then waits to be killed.
KERNEL = """
from hana_client import HanaClient
client = HanaClient()
print(client.base_url, client.models(), flush=True)
import time
time.sleep(600)
"""


def test_embedded_server_dies_with_its_parent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HANA_URL", "HANA_HOST")}
    env |= {
        "OLLAMA_HOST": f"127.0.0.1:{free_port()}",  # nothing answers there
        "HANA_MODELS": str(tmp_path),
        "HANA_REGISTER_DEFAULT_MODEL": "0",
    }
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert kernel.stdout is not None
        url, models = kernel.stdout.readline().split(" ", 1)
        assert models.strip() == "[]"
        assert httpx.get(url, timeout=5).status_code == 200
        (server,) = [
            child
            for child in psutil.Process(kernel.pid).children()
            if "hana_server.cli" in " ".join(child.cmdline())
        ]
        assert "--parent-pid" in server.cmdline()
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
        wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 20)
    finally:
        kernel.kill()
        kernel.wait()
        if kernel.stdout is not None:
            kernel.stdout.close()
