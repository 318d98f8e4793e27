"""Pulling models from the kernel side: progress bars for `%hana pull` and the manager's
pull-first, and the shared pulls of a `%%hana` cell whose model the server does not have yet.

Bars: in a notebook front end (Lab, Notebook, VS Code) tqdm's widget bars, one per layer; in a
terminal IPython or plain Python, tqdm's text bars on stderr. They are made and updated on the
thread that runs the cell, like every other display call (see display.py).

A `%%hana` cell pulls on the background loop instead, next to its streams; the progress is folded
into a `PullProgress` that each waiting stream's view draws as text bars inside its own output,
which the answer then replaces.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hana_client import HanaClient
from hana_client.pull_progress import PullBars, PullProgress
from hana_protocol.errors import HanaError


def is_terminal(shell: Any) -> bool:
    """True for a terminal IPython, where output is text and a display cannot be updated."""
    # By name: importing IPython.terminal would pull in prompt_toolkit inside every kernel.
    return any(cls.__name__ == "TerminalInteractiveShell" for cls in type(shell).__mro__)


def in_notebook() -> bool:
    """True in an IPython shell that is not a terminal (a kernel behind a front end)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and not is_terminal(shell)


def pull_bars(live: bool | None = None) -> PullBars:
    """Bars for a pull drawn from this thread: widgets when `live` (default: `in_notebook()`),
    else text on stderr."""
    if live is None:
        live = in_notebook()
    if live:
        from tqdm.notebook import tqdm as notebook_tqdm

        return PullBars(notebook_tqdm)
    return PullBars()


class CellPulls:
    """The pulls of one `%%hana` cell: one per missing model, however many streams wait for it.

    Runs on the background loop. Cancelling the streams (Kernel > Interrupt) cancels the pull,
    which closes its HTTP stream; the server keeps what it fetched for the next pull.
    """

    def __init__(self, client: HanaClient, *, insecure: bool = False) -> None:
        self.client = client
        self.insecure = insecure
        self.progress: dict[str, PullProgress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def pull(self, model: str) -> PullProgress:
        """Pull `model` (or join the pull already running for it); its progress, once done."""
        progress = self.watch(model)
        task = self._tasks.get(model)
        if task is None:
            task = self._tasks[model] = asyncio.ensure_future(self._pull(model, progress))
        await task
        return progress

    def watch(self, model: str) -> PullProgress:
        """The progress of `model`'s pull (made before it starts, so views can show it)."""
        return self.progress.setdefault(model, PullProgress(model))

    async def _pull(self, model: str, progress: PullProgress) -> None:
        try:
            async for chunk in self.client.async_stream_pull(model, insecure=self.insecure):
                progress.add(chunk)
        except HanaError as exc:
            raise HanaError(f"pulling {model} failed: {exc.message}", status=exc.status) from None
        if not progress.done:
            raise HanaError(f"pulling {model} failed: the server ended the pull early")
