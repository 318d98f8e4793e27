"""Pull progress: Ollama's `/api/pull` status stream, folded per layer and drawn as tqdm bars.

The stream is `{"status": "pulling manifest"}`, then `{"status": "pulling <hex12>", "digest",
"total", "completed"?}` every ~60 ms per layer (`completed` left out while 0; one full event for a
layer already present), then `verifying sha256 digest`, `writing manifest`, `success`.

`PullProgress` folds it (thread-safe: the background loop writes, a cell's thread reads) and
renders text lines; `PullBars` draws it as `ollama pull` does, one tqdm bar per layer (size,
rate, ETA) and one line per other status. The `hana pull` command, `%hana pull`, the manager's
pull-first and a `%%hana` cell that pulls before it answers all use these two, so they look alike.
tqdm is imported only when something is drawn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

BAR_WIDTH = 80


@dataclass
class LayerProgress:
    """One layer (blob) of a pull: bytes expected and bytes there, and when it was first seen."""

    digest: str
    total: int
    completed: int
    #: Bytes already there at the first event (a resumed or present blob): not counted in rates.
    initial: int
    started: float

    @property
    def label(self) -> str:
        """`pulling <hex12>`, Ollama's name for the layer."""
        return f"pulling {self.digest.removeprefix('sha256:')[:12]}"

    def line(self, now: float, ncols: int = BAR_WIDTH) -> str:
        """A tqdm line: `pulling dde5aa3fc5ff:  45%|████▋     | 113M/250M [00:02<00:02, 51MB/s]`."""
        from tqdm import tqdm

        return tqdm.format_meter(
            min(self.completed, self.total),
            self.total,
            now - self.started,
            ncols=ncols,
            prefix=self.label,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,  # Ollama's sizes are decimal (MB, GB)
            initial=self.initial,
        )


class PullProgress:
    """The state of one pull, folded from its status chunks.

    Example::

        progress = PullProgress("gemma2:2b")
        for chunk in client.stream_pull("gemma2:2b"):
            progress.add(chunk)
        progress.done, progress.completed, progress.lines()
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.status = ""
        self.done = False
        self.started = time.monotonic()
        self.finished: float | None = None
        #: Bumped on every chunk: a view redraws only when it changed.
        self.version = 0
        self._layers: dict[str, LayerProgress] = {}
        self._lock = threading.Lock()

    def add(self, chunk: Mapping[str, Any]) -> None:
        """Fold in one status chunk."""
        now = time.monotonic()
        with self._lock:
            self.status = str(chunk.get("status", ""))
            digest = chunk.get("digest")
            if digest:
                total, completed = int(chunk.get("total") or 0), int(chunk.get("completed") or 0)
                layer = self._layers.get(digest)
                if layer is None:
                    self._layers[digest] = LayerProgress(digest, total, completed, completed, now)
                else:
                    layer.total = max(total, layer.total)
                    layer.completed = max(completed, layer.completed)  # never backwards
            if self.status == "success":
                self.done = True
                self.finished = now
            self.version += 1

    @property
    def layers(self) -> list[LayerProgress]:
        """The layers seen so far, in the order the server pulled them."""
        with self._lock:
            return [LayerProgress(**vars(layer)) for layer in self._layers.values()]

    @property
    def total(self) -> int:
        """Bytes of every layer seen so far."""
        return sum(layer.total for layer in self.layers)

    @property
    def completed(self) -> int:
        """Bytes there so far (downloaded now or before)."""
        return sum(min(layer.completed, layer.total) for layer in self.layers)

    @property
    def downloaded(self) -> int:
        """Bytes this pull fetched (not those resumed or already present)."""
        layers = self.layers
        return sum(max(0, min(layer.completed, layer.total) - layer.initial) for layer in layers)

    def lines(self, ncols: int = BAR_WIDTH) -> list[str]:
        """What `hana pull` shows: the statuses so far, a bar per layer, the latest status last."""
        now = self.finished or time.monotonic()
        with self._lock:
            status = self.status
            layers = list(self._layers.values())
            lines = ["pulling manifest"] + [layer.line(now, ncols) for layer in layers]
        if status and not status.startswith("pulling "):
            lines.append(status)
        return lines


class PullBars:
    """Draw pull chunks as `ollama pull` does: a tqdm bar per layer, a line per other status.

    Call it with each chunk, on one thread; `close()` at the end (also after an error or an
    interrupt: unfinished bars then stay as they were). `tqdm_class` picks the drawing: `tqdm.std`
    (text, for terminals) or `tqdm.notebook` (widgets, for Lab).
    """

    def __init__(
        self,
        tqdm_class: Any = None,
        *,
        file: TextIO | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if tqdm_class is None:
            from tqdm.std import tqdm as tqdm_class
        self.tqdm_class = tqdm_class
        self.file = file
        self._say = say or (lambda line: print(line, file=file, flush=True))
        self.bars: dict[str, Any] = {}
        self._statuses: list[str] = []

    def __call__(self, chunk: Mapping[str, Any]) -> None:
        status = str(chunk.get("status", ""))
        digest = chunk.get("digest")
        if not digest:
            if status and status not in self._statuses:
                self._finish_bars()  # a later step started: every layer is through
                self._statuses.append(status)
                self._say(status)
            return
        total, completed = int(chunk.get("total") or 0), int(chunk.get("completed") or 0)
        bar = self.bars.get(digest)
        if bar is None:
            # Layers come one after the other: a new one means the previous ones are through,
            # and closing them first keeps each bar on its own line.
            self._finish_bars()
            bar = self.bars[digest] = self.tqdm_class(
                total=total,
                initial=completed,
                desc=f"pulling {str(digest).removeprefix('sha256:')[:12]}",
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                file=self.file,
                leave=True,
                dynamic_ncols=True,
            )
            return
        if total > (bar.total or 0):
            bar.total = total
        if completed > bar.n:
            bar.update(completed - bar.n)

    def _finish_bars(self) -> None:
        for bar in self.bars.values():
            if not getattr(bar, "disable", False) and bar.n < (bar.total or 0):
                # The last tick of a layer may show less than its total (ticks are every 60 ms);
                # a later step means the layer is complete.
                bar.update(bar.total - bar.n)
            bar.close()

    def close(self) -> None:
        """Close every bar; bars of an unfinished pull keep their last state."""
        for bar in self.bars.values():
            bar.close()
