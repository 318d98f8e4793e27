"""`jupyter lab` with hana and this tree's built labextension, for the browser tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from server_harness import file_sha256, free_port
from tiny_gguf import write_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "labextension" / "dist"
MODEL = "tiny:e2e"
OTHER_MODEL = "tiny:other"  # a second row, for the screenshots


class LabProcess:
    """`jupyter lab` on a free port with a private config, model store and settings."""

    def __init__(
        self,
        root: Path,
        python: Path | None = None,
        *,
        installed: bool = False,
        app: str = "jupyterlab",
    ) -> None:
        """`python`: the environment to run Lab from. `installed`: use what that environment
        has installed (the wheel test) instead of this tree's build and an explicit enable.
        `app`: the module to run (`notebook` for Notebook 7, which has no status bar)."""
        self.root = root
        self.app = app
        self.python = python or Path(sys.executable)
        self.installed = installed
        self.port = free_port()
        self.token = "hana-e2e-token"
        self.base_url = "/e2e@lab/"  # not "/": catches URLs built without the base
        self.url = f"http://127.0.0.1:{self.port}{self.base_url}"
        self.log_path = root / "lab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.http = httpx.Client()  # replaced by launch()

    def start(self) -> LabProcess:
        config = self.root / "config"
        data = self.root / "data" / "labextensions"
        config.mkdir(parents=True)
        data.mkdir(parents=True)
        if not self.installed:
            # The tree's build, not whatever the environment has installed.
            (data / "hana-jupyter").symlink_to(BUILT)
        extensions = {} if self.installed else {"hana_server": True}
        (config / "jupyter_server_config.json").write_text(
            json.dumps(
                {
                    "ServerApp": {
                        "jpserver_extensions": extensions,
                        "token": self.token,
                        "port": self.port,
                        "port_retries": 0,
                        "base_url": self.base_url,
                        "open_browser": False,
                        "allow_root": True,
                        "root_dir": str(self.root / "notebooks"),
                    },
                    "HanaApp": {"port": 0, "keep_alive": "5m"},
                    "LabApp": {"news_url": None},
                }
            )
        )
        if self.app == "jupyterlab":
            # No "get notified about Jupyter news?" toast over the screenshots. (Notebook 7 has
            # no such plugin and fails on settings for a plugin it does not know.)
            notification = self.root / "settings" / "@jupyterlab" / "apputils-extension"
            notification.mkdir(parents=True)
            settings = notification / "notification.jupyterlab-settings"
            settings.write_text('{"fetchNews": "false"}')
        (self.root / "notebooks").mkdir()
        self.env = {
            **clean_env(self.python if self.installed else None),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_PATH": str(data.parent),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(self.root / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.root / "workspaces"),
            "HANA_MODELS": str(self.root / "models"),
            "HANA_REGISTER_DEFAULT_MODEL": "0",
        }
        return self.launch()

    def launch(self) -> LabProcess:
        """Start the server (again, after `stop()`: same port, token and store)."""
        self.http = httpx.Client(
            base_url=self.url + "hana/",
            headers={"Authorization": f"token {self.token}"},
            timeout=httpx.Timeout(60.0),
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", self.app],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log()}")
            try:
                if self.http.get("api/hana/status").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter lab did not answer: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def shared_url(self) -> str:
        """The shared (no-auth) port's URL, from the runtime file hana writes."""
        (info,) = (self.root / "runtime").glob("hana-*.json")
        return str(json.loads(info.read_text())["url"])

    def create_tiny(self, name: str, seed: int = 0) -> None:
        gguf = write_tiny_gguf(self.root / f"tiny-{seed}.gguf", seed=seed)
        digest = "sha256:" + file_sha256(gguf)
        self.http.post(f"api/blobs/{digest}", content=gguf.read_bytes()).raise_for_status()
        body = {"model": name, "files": {gguf.name: digest}, "stream": False}
        response = self.http.post("api/create", json=body)
        assert response.status_code == 200, response.text

    def ps(self) -> list[dict[str, Any]]:
        return list(self.http.get("api/ps").json()["models"])

    def stop(self) -> None:
        self.http.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # twice: Jupyter asks to confirm the first
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def clean_env(python: Path | None = None) -> dict[str, str]:
    """This process's environment without what would point a child at another server or tree.

    With `python` (another environment's interpreter), also without this one's import path and
    with only that environment's scripts and the system's on PATH.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JUPYTER", "HANA_", "OLLAMA_"))
    }
    if python is not None:
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        env["PATH"] = os.pathsep.join([str(python.parent), "/usr/bin", "/bin"])
    return env
