"""`HanaPanel`: a live view of a hana server's runners, with Warm up / Unload / keep-alive controls.

Where updates come from: the server's event stream (`HanaClient.events()`, server-sent events).
Its first event is the current state, each later one a new state after a change (load progress,
a request admitted or finished, an unload) or a pull's progress (`pull` events, below), so the
panel never polls; a second-by-second tick
only advances the keep-alive countdowns, locally. Several panels, in one kernel or many, show the
same thing because each follows the server, not its own bookkeeping.

Threads: everything the panel does runs as tasks on hana's background event loop (the thread
that also carries `HanaClient`'s requests), and only those tasks assign widget traits. That one
writer keeps two ipykernel 7 hazards away:

- ipykernel >= 7 may deliver button clicks on a comm subshell thread while a cell runs, so
  callbacks and the stream would otherwise write the same widgets from two threads. Callbacks
  here only hand work to the loop (`call_soon_threadsafe`).
- Output from threads is routed by a "current parent" (ipykernel#1450); the panel never prints or
  displays from its thread, it only assigns traits, which travel as comm messages and reach the
  widget wherever it is shown. The stream keeps flowing while another cell is busy generating.

Updates are coalesced to at most one render per `throttle` seconds (IOPub drops messages above
~1000/s), and a trait set to the value it has sends nothing, so an idle panel sends only its
countdowns.

The panel stops (stream closed, tasks cancelled) on `close()` and at interpreter exit, which is
how a kernel shuts down. When the server cannot be reached the panel says so and reconnects with
exponential backoff; Refresh retries at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import html
import math
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from ipywidgets import HTML, Button, HBox, Layout, VBox
from traitlets import Bool, Float, Int, Unicode

from hana_client import HanaClient, background_loop
from hana_client.payload import keep_alive_value
from hana_jupyter.panel_row import (
    COLUMNS,
    ModelRow,
    cell_layout,
    close_tree,
    describe_keep_alive,
)
from hana_protocol.durations import parse_env_keep_alive, parse_keep_alive
from hana_protocol.errors import HanaError, ServerUnreachable


class StreamEnded(Exception):
    """The server closed the event stream (it is shutting down or restarting)."""


class HanaPanel(VBox):
    """A live panel of a hana server's models: state, runner, memory, keep-alive, speed.

    One row per installed model, loaded ones first. Warm up loads a model, Unload frees it once
    it is idle, and the keep-alive chooser applies at once to a loaded model (for a model that is
    not loaded it sets the keep-alive its next Warm up uses).

    Example::

        from hana_jupyter.runner_panel import HanaPanel
        panel = HanaPanel()            # or hana_jupyter.panel(); %hana panel in a cell
        panel                          # shows it (last expression of a cell)
        panel.rows["gemma3:270m"].state
        panel.close()                  # stops following the server

    Parameters
    ----------
    client:
        The `HanaClient` to use; by default `HanaClient(url=url)`, which finds the server the
        way the magics do.
    url:
        Server URL when no client is given.
    """

    url = Unicode("", help="URL of the server the panel follows (empty until it is found).")
    connected = Bool(False, help="True while the event stream from the server is open.")
    status = Unicode("connecting…", help="The status line: connection, counts, or the error.")
    running = Bool(True, help="True until the panel is closed; then it no longer follows.")
    events_received = Int(0, help="Server events applied so far (state, crashed, ...).")
    throttle = Float(0.1, help="Least seconds between two renders; changes in between coalesce.")
    retry_delay = Float(0.5, help="Seconds before the first reconnect attempt; doubles each time.")
    max_retry_delay = Float(10.0, help="Longest wait between two reconnect attempts, in seconds.")

    def __init__(
        self, client: HanaClient | None = None, *, url: str | None = None, **kwargs: Any
    ) -> None:
        self.client = client if client is not None else HanaClient(url=url)
        self._owns_client = client is None
        self._loop = background_loop().loop
        spaced = Layout(margin="0 18px 0 0")
        self._title = HTML('<b style="font-size:14px">hana</b>', layout=spaced)
        self._url_label = HTML(layout=spaced)
        self._status_label = HTML()
        self._refresh_button = Button(
            description="Refresh",
            icon="refresh",
            tooltip="Re-read the installed models; reconnect now if the server was unreachable",
            layout=Layout(width="auto"),
        )
        self._refresh_button.on_click(lambda _button: self.refresh())
        header = HBox(
            [
                HBox(
                    [self._title, self._url_label, self._status_label],
                    layout=Layout(align_items="center"),
                ),
                self._refresh_button,
            ],
            layout=Layout(align_items="center", justify_content="space-between"),
        )
        columns = HBox(
            [HTML(f"<small><b>{name}</b></small>", layout=cell_layout(w)) for name, w in COLUMNS],
            layout=Layout(border_bottom="1px solid #bdbdbd"),
        )
        self._rows_box = VBox()
        super().__init__([header, columns, self._rows_box], **kwargs)
        self._paint_header()

        # State below is read and written on the loop thread only.
        self._rows: dict[str, ModelRow] = {}
        self._installed: list[str] = []
        self._remotes: dict[str, str] = {}  # remote model -> its upstream (from /api/tags)
        self._runners: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, int] = {}
        # Pulls in progress by model name: {"total", "completed"} bytes (from /api/hana/status at
        # connect, then from `pull` events).
        self._pulls: dict[str, dict[str, Any]] = {}
        self._default_keep_alive: float | None = None
        self._cpus: int | None = None
        # `auto` routing counts (from /api/hana/status at connect, then from `route` events).
        self._routing: dict[str, Any] = {}
        self._dirty: asyncio.Event | None = None
        self._retry_now: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._stopped = threading.Event()
        self._loop_thread_id: int | None = None
        _live_panels.add(self)
        self._call(self._start)

    # ---- public ---------------------------------------------------------------------------------

    @property
    def rows(self) -> dict[str, ModelRow]:
        """The rows by model name (a copy; the rows themselves are live)."""
        return dict(self._rows)

    def refresh(self) -> None:
        """Re-read the installed models and the server's state; reconnect now if disconnected."""
        self._call(self._refresh)

    def close(self) -> None:
        """Stop following the server (stream closed, requests cancelled) and close the widgets."""
        self._stop(close_widgets=True)
        super().close()

    def _stop(self, *, close_widgets: bool) -> None:
        """Cancel the panel's tasks; wait for them unless called on the loop thread itself."""
        if self._closing:
            return
        self._closing = True
        self._call(lambda: self._shutdown(close_widgets))
        if threading.get_ident() != self._loop_thread_id:
            self._stopped.wait(15.0)  # bounded: a busy machine may take seconds to unwind

    # ---- plumbing -------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the loop thread; safe to call from any thread (clicks arrive on several)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start a task owned by the panel (cancelled on close). Loop thread only."""
        if self._closing:
            coro.close()  # never started: no "was never awaited" warning
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a server problem (those are handled where they happen): show it rather
            # than let the panel freeze silently.
            error = task.exception()
            self.client.log.error("hana panel task failed", exc_info=error)
            self.status = f"panel error: {error!r}"
            self._paint_header()

    def _start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self._dirty = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._spawn(self._follow())
        self._spawn(self._render_loop())

    def _shutdown(self, close_widgets: bool) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()

        async def finish() -> None:
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
                self.running = False
                self.connected = False
                if close_widgets:
                    for child in self.children:
                        close_tree(child)
                if self._owns_client:
                    await self.client.async_close()
            finally:
                self._stopped.set()

        self._loop.create_task(finish())

    def _changed(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    # ---- following the server ---------------------------------------------------------------

    async def _follow(self) -> None:
        """Read the event stream; when it fails say why and reconnect with backoff, forever."""
        assert self._retry_now is not None
        delay = self.retry_delay
        while True:
            try:
                await self._read_stream()
            except (HanaError, StreamEnded, ValueError) as exc:
                problem = f"server unreachable: {_reason(exc)}"
            except Exception as exc:
                # An event we cannot read is a bug, but the next connection may well work: say
                # it and go on rather than freeze the panel.
                self.client.log.exception("hana panel: reading the event stream failed")
                problem = f"panel error: {exc!r}"
            if self.connected:  # it was up a moment ago: try again soon
                delay = self.retry_delay
            self.connected = False
            self.status = f"{problem}; retrying in {delay:g} s"
            self._show_unknown()
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):  # Refresh cuts the wait short
                await asyncio.wait_for(self._retry_now.wait(), delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _read_stream(self) -> None:
        # Discovery may probe or start a server: off the loop. The same server the magics use.
        self.url = await asyncio.to_thread(lambda: self.client.base_url)
        self._paint_header()
        await self._load_installed()
        async with aclosing(self.client.async_events()) as events:
            async for event in events:
                self.connected = True  # the first event is the current state
                self._apply(event)
        raise StreamEnded("the server closed the event stream")

    async def _load_installed(self) -> None:
        models, status = await asyncio.gather(self.client.async_models(), self._status())
        # `auto` has no runner of its own: it is the routing line of the status, not a row.
        self._installed = [str(m["name"]) for m in models if not _is_router(m)]
        self._remotes = {
            str(m["name"]): str(m["remote_host"]) for m in models if m.get("remote_host")
        }
        if status is not None:
            self._routing = dict(status.get("routing") or {})
            self._pulls = {str(p["model"]): dict(p) for p in status.get("pulls") or []}
            self._cpus = status.get("cpus")
            self._default_keep_alive = _seconds(status.get("settings", {}).get("keep_alive"))
        self._changed()

    async def _status(self) -> dict[str, Any] | None:
        try:
            return await self.client.async_status()
        except ServerUnreachable:
            raise
        except HanaError:  # a plain Ollama server has no /api/hana/status
            return None

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        self.events_received += 1
        if kind == "state":
            self._runners = {str(e["name"]): dict(e) for e in event.get("models", [])}
            self._waiting = {str(w["name"]): int(w["queued"]) for w in event.get("waiting", [])}
            unknown = (set(self._runners) | set(self._waiting)) - set(self._installed)
            if unknown:  # created since we listed the models
                self._spawn(self._reload_installed())
        elif kind == "pull":
            self._apply_pull(event)
        elif kind == "route":
            self._routing = dict(event)
        elif kind in ("crashed", "load_failed"):
            row = self._rows.get(str(event.get("model")))
            if row is not None:
                row.error = (
                    f"runner crashed (pid {event.get('pid')})"
                    if kind == "crashed"
                    else f"load failed: {event.get('error')}"
                )
        self._changed()

    def _apply_pull(self, event: Mapping[str, Any]) -> None:
        """A `pull` event: `{"event": "pull", "model", "status": "pulling" | "success" | "error",
        "total", "completed", "error"?}`."""
        model, status = str(event.get("model")), event.get("status")
        if status == "pulling":
            self._pulls[model] = {"total": event.get("total"), "completed": event.get("completed")}
            return
        self._pulls.pop(model, None)
        if status == "success":
            # Installed now: keep its row (newest first, as /api/tags lists it) rather than drop
            # it until the list is read again.
            if model not in self._installed:
                self._installed.insert(0, model)
            self._spawn(self._reload_installed())
        elif status == "error" and event.get("error") != "pull canceled":
            row = self._rows.get(model)
            if row is not None:  # an installed model whose update failed keeps its row
                row.error = f"pull failed: {event.get('error')}"

    async def _reload_installed(self) -> None:
        # A failure here needs no report: the event stream notices a dead server and says so.
        with contextlib.suppress(HanaError, ValueError):
            await self._load_installed()

    def _refresh(self) -> None:
        if self.connected:
            self._spawn(self._reload_installed())
        elif self._retry_now is not None:
            self._retry_now.set()

    # ---- rendering (loop thread) ----------------------------------------------------------------

    async def _render_loop(self) -> None:
        assert self._dirty is not None
        while True:
            # Wake on a change, or at the next whole second so every countdown steps together.
            try:
                await asyncio.wait_for(self._dirty.wait(), 1.0 - time.time() % 1.0)
            except TimeoutError:
                self._tick()
                continue
            self._dirty.clear()
            self._render()
            await asyncio.sleep(self.throttle)

    def _tick(self) -> None:
        if self.connected:
            now = datetime.now(UTC)
            for row in self._rows.values():
                row.tick(now)

    def _render(self) -> None:
        if self._closing:
            return
        names = list(
            dict.fromkeys([*self._installed, *self._runners, *self._waiting, *self._pulls])
        )
        for gone in set(self._rows) - set(names):
            close_tree(self._rows.pop(gone))
        now = datetime.now(UTC)
        for name in names:
            row = self._rows.get(name) or self._new_row(name)
            row.remote_host = self._remotes.get(name, "")
            if self.connected:
                row.show(
                    self._runners.get(name), self._waiting.get(name, 0), now, self._pulls.get(name)
                )
            else:
                row.show_unknown()
        # Loaded first, each group in the stable order of /api/tags (the server's own order
        # moves a model to the top whenever it is used, which makes rows jump under the mouse).
        ordered = [self._rows[n] for n in names if n in self._runners] + [
            self._rows[n] for n in names if n not in self._runners
        ]
        if list(self._rows_box.children) != ordered:
            self._rows_box.children = tuple(ordered)
        if self.connected:
            self.status = self._summary()
        self._paint_header()

    def _show_unknown(self) -> None:
        for row in self._rows.values():
            row.show_unknown()
        self._paint_header()

    def _new_row(self, name: str) -> ModelRow:
        row = ModelRow(
            name,
            on_warm=lambda row: self._call(lambda: self._spawn(self._warm(row))),
            on_unload=lambda row: self._call(lambda: self._spawn(self._unload(row))),
            on_keep_alive=lambda row: self._call(lambda: self._spawn(self._keep_alive(row))),
            default_keep_alive=self._default_keep_alive,
        )
        self._rows[name] = row
        return row

    def _summary(self) -> str:
        loaded = sum(1 for e in self._runners.values() if e.get("state") != "remote")
        busy = sum(1 for e in self._runners.values() if e.get("state") == "busy")
        remote_busy = sum(
            int(e.get("in_flight") or 0)
            for e in self._runners.values()
            if e.get("state") == "remote"
        )
        waiting = sum(self._waiting.values()) + sum(
            int(e.get("queued") or 0) for e in self._runners.values()
        )
        parts = [f"{loaded} loaded", f"{busy} busy"]
        if remote_busy:
            parts.append(f"{remote_busy} remote in flight")
        if waiting:
            parts.append(f"{waiting} queued")
        if self._pulls:
            parts.append(f"{len(self._pulls)} pulling")
        if self._cpus:
            parts.append(f"{self._cpus} CPUs")
        if routed := routing_summary(self._routing):
            parts.append(routed)
        return " · ".join(parts)

    def _paint_header(self) -> None:
        self._url_label.value = (
            f'<a href="{html.escape(self.url)}" target="_blank"><code>'
            f"{html.escape(self.url.rstrip('/'))}</code></a>"
            if self.url
            else "<i>finding the server…</i>"
        )
        dot = "#219653" if self.connected else "#c0392b"
        self._status_label.value = f'<span style="color:{dot}">●</span> {html.escape(self.status)}'

    # ---- actions (loop thread; each its own task) -----------------------------------------------

    async def _action(self, row: ModelRow, keep_alive: str | float | None, what: str) -> None:
        row.error = row.note = ""
        row.busy_action = True
        self._changed()
        try:
            await self.client.async_generate(row.model, "", keep_alive=keep_alive)
        except HanaError as exc:
            row.error = f"{what}: {exc}"
        finally:
            row.busy_action = False
            self._changed()

    async def _warm(self, row: ModelRow) -> None:
        await self._action(row, keep_alive_value(row.chosen_keep_alive) or None, "warm up")

    async def _unload(self, row: ModelRow) -> None:
        await self._action(row, 0, "unload")

    async def _keep_alive(self, row: ModelRow) -> None:
        self._changed()  # "custom…" shows its text box, another choice hides it
        value = row.chosen_keep_alive
        if not value:
            return
        keep_alive = keep_alive_value(value)
        try:
            parsed = parse_keep_alive(keep_alive)
        except HanaError as exc:
            row.error = f"keep-alive {value!r}: {exc.message}"
            return
        seconds = _signed(parsed if parsed is not None else 0.0)
        if row.keep_alive is None:
            # Not loaded: sending it would load the model; keep it for the next Warm up.
            row.error = ""
            row.note = f"Warm up keeps it {describe_keep_alive(seconds)}"
            return
        if seconds != row.keep_alive:  # equal when the chooser just followed the server
            await self._action(row, keep_alive, "keep-alive")


def _seconds(text: Any) -> float | None:
    """The server's default keep-alive ("5m", "300", "-1") in seconds, -1 for forever."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return _signed(parse_env_keep_alive(text))
    except (HanaError, ValueError):
        return None


def _signed(seconds: float) -> float:
    # The server's parsers say forever with math.inf; /api/ps and the chooser say -1.
    return -1.0 if seconds == math.inf else seconds


def _is_router(model: Mapping[str, Any]) -> bool:
    details = model.get("details")
    return isinstance(details, Mapping) and details.get("format") == "router"


def routing_summary(routing: Mapping[str, Any]) -> str:
    """`auto` requests per tier: "auto: simple 3, medium 0, complex 1, 1 fell back"; "" when the
    server routes nothing (no routes, no routed request)."""
    requests = dict(routing.get("requests") or {})
    tiers = list(dict.fromkeys([*(routing.get("routes") or {}), *requests]))
    if not tiers and not routing.get("failed"):
        return ""
    parts = [f"{tier} {requests.get(tier, 0)}" for tier in tiers]
    if routing.get("fallbacks"):
        parts.append(f"{routing['fallbacks']} fell back")
    if routing.get("failed"):
        parts.append(f"{routing['failed']} failed")
    return f"{routing.get('name', 'auto')}: " + ", ".join(parts)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ServerUnreachable):
        return exc.reason
    return str(exc) or type(exc).__name__


_live_panels: weakref.WeakSet[HanaPanel] = weakref.WeakSet()


@atexit.register
def _stop_live_panels() -> None:
    # A kernel shuts down by exiting: end the streams so the server sees them go. The widgets are
    # left alone: IOPub may already be gone, and the front end drops them with the kernel.
    for live in list(_live_panels):
        live._stop(close_widgets=False)


def panel(url: str | None = None, *, client: HanaClient | None = None) -> HanaPanel:
    """A live panel of the hana server's models; shown when it ends a cell (`%hana panel` too).

    `url` picks a server; by default it is found like the magics find it (HANA_URL, the shared
    port, or a server in this kernel). Keep the returned panel to `close()` it.
    """
    return HanaPanel(client, url=url)


__all__ = ["HanaPanel", "ModelRow", "panel"]
