"""A real `jupyter server` process with hana: enabled by the install, and no runner outlives it.

SIGTERM (what Ctrl-C confirmed or a service manager sends) runs stop_extension; SIGKILL runs
nothing, so the runners' parent-death watchdog must end them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from server_harness import free_port, wait_for


class JupyterServerProcess:
    """`jupyter server` in private Jupyter dirs; hana is enabled only by the installed config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime_dir = root / "runtime"
        self.log_path = root / "jupyter.log"
        config_dir = root / "config"
        config_dir.mkdir(parents=True)
        # The other installed extensions only slow the start; hana_server is deliberately not
        # named: the jupyter_server_config.d file placed by `pip install` must enable it.
        others = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim")
        config = {"ServerApp": {"jpserver_extensions": dict.fromkeys(others, False)}}
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTER_DATA_DIR": str(root / "data"),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        for name in ("HANA_URL", "HANA_TOKEN", "OLLAMA_HOST", "HANA_HOST", "HANA_MODELS"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> JupyterServerProcess:
        command = [
            str(Path(sys.executable).parent / "jupyter-server"),
            "--no-browser",
            f"--port={free_port()}",
            "--IdentityProvider.token=secret",
            "--allow-root",  # containers run tests as root
            f"--ServerApp.root_dir={self.root}",
            f"--HanaApp.models_dir={self.root / 'models'}",
            "--HanaApp.port=0",
            "--HanaApp.register_default_model=False",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        try:
            wait_for(self._answers, timeout=60)
        except AssertionError:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"hana in jupyter server did not answer: {self.log()}") from None
        return self

    @property
    def runtime_file(self) -> Path:
        assert self.proc is not None
        return self.runtime_dir / f"hana-{self.proc.pid}.json"

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"jupyter server exited: {self.log()}")
        if not self.url:
            if not self.runtime_file.exists():
                return False
            self.url = json.loads(self.runtime_file.read_text())["url"]
        try:
            return httpx.get(self.url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def load_tiny_model(self, gguf: Path) -> list[psutil.Process]:
        """Create `tiny` through the shared port, generate once, return the runner processes."""
        data = gguf.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with httpx.Client(base_url=self.url, timeout=60) as http:
            http.post(f"/api/blobs/{digest}", content=data).raise_for_status()
            body: dict[str, Any] = {"model": "tiny", "files": {"tiny.gguf": digest}}
            http.post("/api/create", json={**body, "stream": False}).raise_for_status()
            options = {"num_predict": 2}
            reply = http.post("/api/generate", json={"model": "tiny", "options": options})
            assert reply.status_code == 200, reply.text
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [c for c in children if "hana_server.runner" in " ".join(c.cmdline())]

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture
def jupyter_server(tmp_path: Path) -> Iterator[JupyterServerProcess]:
    server = JupyterServerProcess(tmp_path).start()
    yield server
    server.stop(signal.SIGKILL)


def test_sigterm_stops_every_runner_and_unpublishes(
    jupyter_server: JupyterServerProcess, tiny_gguf_path: Path
) -> None:
    runners = jupyter_server.load_tiny_model(tiny_gguf_path)
    assert len(runners) == 1

    jupyter_server.stop(signal.SIGTERM)

    _, alive = psutil.wait_procs(runners, timeout=5)
    assert not alive
    assert not jupyter_server.runtime_file.exists()
    assert "hana: stopping runners" in jupyter_server.log()


def test_sigkill_leaves_no_runner_behind(
    jupyter_server: JupyterServerProcess, tiny_gguf_path: Path
) -> None:
    runners = jupyter_server.load_tiny_model(tiny_gguf_path)
    assert len(runners) == 1
    assert all(r.ppid() == jupyter_server.proc.pid for r in runners if jupyter_server.proc)

    started = time.monotonic()
    jupyter_server.stop(signal.SIGKILL)

    _, alive = psutil.wait_procs(runners, timeout=10)
    assert not alive, "runner survived its Jupyter server"
    assert time.monotonic() - started < 10
