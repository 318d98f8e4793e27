"""The real HTTP app (shared-port handlers, HanaService, Scheduler) on a loopback port inside the
test process, its runners scripted: API tests choose what a runner answers and get it back
through real HTTP in milliseconds. The server runs on a thread with its own event loop, so sync
clients (httpx, ollama, openai) work from the test; scripted controls are thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
from hana_server.config import HanaSettings
from hana_server.gpu.detect import GpuProvider
from hana_server.service import HanaService
from hana_server.shared_port import bind_shared_port, make_shared_port_app, url_for
from scripted_runner import Script, ScriptedLauncher
from server_harness import file_sha256
from tiny_gguf import write_tiny_gguf


class ScriptedServer:
    """The shared-port app + `HanaService(launcher=ScriptedLauncher)` on 127.0.0.1."""

    def __init__(self, root: Path, gpu: GpuProvider | None = None, **settings: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.settings = HanaSettings(
            models_dir=str(root / "models"),
            host="127.0.0.1",
            port=0,
            register_default_model=False,
            **settings,
        )
        self.launcher = ScriptedLauncher()
        self.service = HanaService(self.settings, launcher=self.launcher, gpu=gpu)
        self.url = ""
        self.http = httpx.Client(timeout=httpx.Timeout(30.0), trust_env=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="scripted-hana", daemon=True)

    def start(self) -> ScriptedServer:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        self.http.base_url = httpx.URL(self.url)
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.service.start()
            server, port = bind_shared_port(
                make_shared_port_app(self.service, self.settings), "127.0.0.1", 0, fallback=False
            )
            self.url = self.service.url = url_for("127.0.0.1", port)
            self.http_server = server  # transport tests look at its open connections
        except BaseException as error:  # surfaced to the test thread
            self._error = error
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        server.stop()
        await self.service.stop()
        await asyncio.wait_for(server.close_all_connections(), 5)

    def stop(self) -> None:
        self.http.close()
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    # ------------------------------------------------------------------ models

    def create_tiny(self, name: str, seed: int = 0, **fields: Any) -> Path:
        """Create `name` from a tiny GGUF (one file per seed) through `/api/create`; returns the
        model file the scheduler will ask the launcher to run."""
        path = self.root / f"tiny-{seed}.gguf"
        if not path.exists():
            write_tiny_gguf(path, seed=seed)
        digest = "sha256:" + file_sha256(path)
        self.http.post(f"/api/blobs/{digest}", content=path.read_bytes()).raise_for_status()
        body = {"model": name, "files": {path.name: digest}, "stream": False, **fields}
        response = self.http.post("/api/create", json=body)
        assert response.status_code == 200, response.text
        return self.service.store.get(name).model_path

    def script(self, name: str, script: Script) -> Script:
        """Runners of model `name` started from now on follow `script`."""
        return self.launcher.script(self.service.store.get(name).model_path, script)

    def ps(self) -> list[dict[str, Any]]:
        return self.http.get("/api/ps").json()["models"]
