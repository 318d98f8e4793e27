"""A real `hana serve` process for tests, with a private model store and tiny models in it."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from tiny_gguf import write_tiny_gguf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HanaServerProcess:
    """`hana serve` on a free port; `stop()` sends SIGTERM like Ctrl-C would."""

    #: How the server is started (a test may wrap `hana serve`, e.g. to record requests).
    command: tuple[str, ...] = ("-m", "hana_server.cli", "serve")

    def __init__(
        self, models_dir: Path, log_path: Path, cwd: Path | None = None, **env: str
    ) -> None:
        self.models_dir = models_dir
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "HANA_MODELS": str(models_dir),
            "HANA_HOST": f"127.0.0.1:{self.port}",
            "HANA_REGISTER_DEFAULT_MODEL": "0",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        key = self.env.get("HANA_API_KEY")  # a server started with a key wants it everywhere
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(60.0), headers=self.headers
        )

    def start(self) -> HanaServerProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, *self.command],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hana serve exited: {self.log()}")
            try:
                if httpx.get(self.url, timeout=1, headers=self.headers).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"hana serve did not answer: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def runner_pids(self) -> list[int]:
        """Runner processes started by this server (its children running hana_server.runner)."""
        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if "hana_server.runner" in " ".join(safe_cmdline(c))]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.http.close()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    # ------------------------------------------------------------------ models

    def create_model(self, name: str, gguf: Path, **fields: Any) -> None:
        """Upload a GGUF blob and create `name` from it, as `hana create` does."""
        digest = "sha256:" + file_sha256(gguf)
        if self.http.head(f"/api/blobs/{digest}").status_code != 200:
            if gguf.stat().st_size > 50 << 20:
                # Big files (the real gemma) are linked into the store instead of uploaded:
                # the upload path is tested on tiny files, and 250 MB over HTTP per test is slow.
                blob = self.models_dir / "blobs" / digest.replace(":", "-")
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.link(gguf, blob)
            else:
                self.http.post(f"/api/blobs/{digest}", content=gguf.read_bytes()).raise_for_status()
        body = {"model": name, "files": {gguf.name: digest}, "stream": False, **fields}
        response = self.http.post("/api/create", json=body)
        assert response.status_code == 200, response.text

    def create_tiny(self, name: str, directory: Path, seed: int = 0, **fields: Any) -> None:
        path = directory / f"tiny-{seed}.gguf"
        if not path.exists():
            write_tiny_gguf(path, seed=seed)
        self.create_model(name, path, **fields)

    def ps(self) -> list[dict[str, Any]]:
        return self.http.get("/api/ps").json()["models"]


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def safe_cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
