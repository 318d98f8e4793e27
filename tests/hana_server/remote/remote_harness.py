"""What the remote-model tests share besides fixtures (test modules import it; importing from
`conftest` would find whichever conftest.py pytest loaded last when several test directories are
collected in one run)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from server_harness import HanaServerProcess, free_port

UPSTREAM_KEY = "upstream-secret"
OPENAI_KEY = "openai-secret"


class LlamaCppServer:
    """`python -m llama_cpp.server` on a tiny GGUF, one request at a time, with an API key."""

    def __init__(self, model: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.model = model
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaCppServer:
        args = {
            "model": str(self.model),
            "model_alias": "tiny-openai",
            "host": "127.0.0.1",
            "port": str(self.port),
            "n_ctx": "32768",
            "n_threads": "1",
            "api_key": OPENAI_KEY,
            "verbose": "False",
            "interrupt_requests": "False",
        }
        command = [sys.executable, "-m", "llama_cpp.server"]
        for key, value in args.items():
            command += [f"--{key}", value]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log_path.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/v1/models", timeout=1, headers=self.headers)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("llama_cpp.server did not answer")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPENAI_KEY}"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def create_remote(server: HanaServerProcess, name: str, **fields: Any) -> httpx.Response:
    return server.http.post("/api/create", json={"model": name, "stream": False, **fields})
