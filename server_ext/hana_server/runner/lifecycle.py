"""The runner's life from start to exit: the model loads on a background thread while /health
already answers, then the ServingModel serves; shutdown stops the engine between two steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hana_server.runner.settings import RunnerSettings

if TYPE_CHECKING:
    from hana_server.runner.model import LlamaLog
    from hana_server.runner.serving import ServingModel

log = logging.getLogger("hana_server.runner")

# Share of the progress bar for reading weights; the rest is the context and the warm-up decode.
_WEIGHTS_SHARE = 0.9


class RunnerLifecycle:
    """The runner process's state: status ("loading", "ok", "error"), load progress, and the
    ServingModel once it is ready."""

    def __init__(self, settings: RunnerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.status = "loading"
        self.progress = 0.0
        self.error: str | None = None
        self.serving: ServingModel | None = None
        self._loop = loop
        self._abort = False
        self._llama_log: LlamaLog | None = None
        self._loader = threading.Thread(target=self._load, name="hana-loader", daemon=True)
        self._on_failure: Callable[[str], None] = lambda _message: None

    def start(self, on_failure: Callable[[str], None]) -> None:
        """Begin loading; `on_failure(message)` runs on the event loop if loading fails or the
        engine dies later."""
        self._on_failure = on_failure
        self._loader.start()

    def _load(self) -> None:
        try:
            # Imported here, not at the top: llama_cpp takes a few hundred ms to import and the
            # port line and /health must not wait for it.
            from hana_server.runner.model import LlamaLog, LoadAborted
            from hana_server.runner.serving import ServingModel

            self._llama_log = LlamaLog()
            self._llama_log.install()
            threads = self.settings.threads
            try:
                serving = ServingModel.load(
                    self.settings,
                    self._loop,
                    llama_log=self._llama_log,
                    on_progress=self._weights_progress,
                    should_abort=lambda: self._abort,
                    on_engine_crash=self._fail,
                )
            except LoadAborted:
                return
            if self.settings.threads != threads:
                serving.set_threads(self.settings.threads)  # changed while loading
            self.serving = serving
            self.progress = 1.0
            self.status = "ok"
            log.info(
                "model ready: %s (context %d x %d, %d threads)",
                self.settings.model,
                serving.n_ctx_seq,
                self.settings.parallel,
                self.settings.threads,
            )
        except Exception as error:
            detail = self._llama_log.last_error if self._llama_log else ""
            message = f"error loading model {self.settings.model}: {error}"
            if detail:
                message = f"{message} ({detail})"
            self._fail(message)

    def _fail(self, message: str) -> None:
        """Loading failed or the engine died: report it and let the runner exit (any thread)."""
        self.error = message
        self.status = "error"
        log.error("%s", message)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the runner is exiting
            self._loop.call_soon_threadsafe(self._on_failure, message)

    def _weights_progress(self, value: float) -> None:
        self.progress = max(self.progress, min(1.0, value) * _WEIGHTS_SHARE)

    def set_threads(self, threads: int) -> None:
        self.settings.threads = threads
        if self.serving is not None:
            self.serving.set_threads(threads)

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "status": self.status,
            "progress": round(self.progress, 4),
            "n_ctx": self.settings.ctx_size,
            "parallel": self.settings.parallel,
            "active": 0,
            "threads": self.settings.threads,
            "memory_bytes": 0,
        }
        if self.error is not None:
            answer["error"] = self.error
        if self.serving is not None:
            answer.update(self.serving.health_fields())
        return answer

    def close(self, timeout: float) -> None:
        """Abort a load in progress or stop the engine; waits at most about `timeout` seconds."""
        self._abort = True
        if self._loader.ident is not None:
            self._loader.join(timeout)
        if self.serving is not None and not self.serving.close(timeout):
            log.warning("engine did not stop within %.1f s", timeout)
