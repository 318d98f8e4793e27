"""`ModelRow`: one model in the runner panel (state badge, runner, memory, countdown, controls).

A row is a pure view of the server's state: `show(entry, waiting, now)` turns one `/api/ps` entry
(or None for a model that is not loaded) into trait values. It never talks to the server itself:
its buttons and keep-alive chooser call back into the panel, which owns the requests.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ipywidgets import HTML, Button, Dropdown, FloatProgress, HBox, Label, Layout, Text, Widget
from traitlets import Bool, Float, Int, Unicode

from hana_protocol.durations import format_duration
from hana_protocol.formatting import format_size, parse_time

#: The keep-alive chooser: (label, value sent to the server). "custom" shows a text box.
KEEP_ALIVE_CHOICES: tuple[tuple[str, str], ...] = (
    ("5m", "5m"),
    ("30m", "30m"),
    ("1h", "1h"),
    ("forever", "-1"),
    ("custom…", "custom"),
)
_PRESET_SECONDS = {300.0: "5m", 1800.0: "30m", 3600.0: "1h"}

#: Column widths, shared by the rows and the panel's header line so they line up.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "136px"),
    ("state", "116px"),
    ("runner", "132px"),
    ("memory", "60px"),
    ("context", "50px"),
    ("keep-alive", "126px"),
    ("speed", "74px"),
)

_BADGE_COLORS = {
    "unloaded": "#8a8f98",
    "unknown": "#8a8f98",
    "queued": "#8e44ad",
    "pulling": "#16a085",
    "loading": "#2f80ed",
    "ready": "#219653",
    "busy": "#e67e22",
    "expiring": "#c0392b",
    "remote": "#2d9cdb",
}

Action = Callable[["ModelRow"], None]


def keep_alive_choice(seconds: float | None) -> tuple[str, str]:
    """The chooser's (value, custom text) for a keep-alive in seconds (-1 = forever)."""
    if seconds is None:
        return "5m", ""
    if seconds < 0:
        return "-1", ""
    if float(seconds) in _PRESET_SECONDS:
        return _PRESET_SECONDS[float(seconds)], ""
    return "custom", format_duration(seconds)


def describe_keep_alive(seconds: float) -> str:
    """A keep-alive as people say it: "5m", "1h30m", "forever"."""
    return "forever" if seconds < 0 else format_duration(seconds)


def badge_html(text: str, state: str) -> str:
    """A coloured pill naming the row's state."""
    color = _BADGE_COLORS.get(state, "#8a8f98")
    return (
        f'<span style="background:{color};color:#fff;border-radius:10px;padding:1px 9px;'
        f'font-size:12px;white-space:nowrap">{html.escape(text)}</span>'
    )


def cell_layout(width: str) -> Layout:
    """A fixed-width table cell; the rows and the panel's header line use the same ones."""
    return Layout(width=width, min_width=width, overflow="hidden", margin="0 6px 0 0")


class ModelRow(HBox):
    """One installed model: what its runner is doing, and buttons to load, unload and keep it.

    Rows are made and updated by `HanaPanel`; read them to see a model's state from code::

        row = panel.rows["gemma3:270m"]
        row.state, row.in_flight, row.countdown      # ("busy", 2, "5m after idle")
        row.warm_button.click()                        # same as clicking "Warm up"

    Parameters
    ----------
    model:
        The model's name as the server lists it.
    on_warm, on_unload, on_keep_alive:
        Called with this row on whichever thread delivered the click or choice; they must only
        hand the work over (the panel's loop thread alone writes the widgets). `on_keep_alive`
        reads the choice from `chosen_keep_alive`.
    """

    model = Unicode(help="Model name, as /api/tags lists it.")
    state = Unicode(
        "unloaded",
        help="unloaded | pulling | queued | loading | ready | busy | expiring | remote | "
        "unknown (no server).",
    )
    in_flight = Int(0, help="Requests the runner is working on.")
    num_parallel = Int(0, help="Requests the runner can work on at once (0 when not loaded).")
    queued = Int(0, help="Requests waiting for this model.")
    load_progress = Float(0.0, help="Loading progress, 0..1.")
    pull_progress = Float(
        None, allow_none=True, help="Share of the model's pull done, 0..1; None when not pulling."
    )
    pull_bytes = Unicode("", help='Bytes of the pull so far, as shown ("113 MB / 250 MB").')
    pid = Int(None, allow_none=True, help="Runner process id; None when not loaded.")
    port = Int(None, allow_none=True, help="Runner's own localhost port; None when not loaded.")
    size = Int(0, help="Bytes of memory the runner is estimated to use (0 when not loaded).")
    context_length = Int(0, help="Context tokens per request of the loaded runner.")
    keep_alive = Float(
        None, allow_none=True, help="Server's keep-alive in seconds (-1 forever); None unloaded."
    )
    expires_at = Unicode("", help="When the idle runner unloads (RFC 3339), as /api/ps says.")
    countdown = Unicode("", help="Time left until unload, as shown; ticks every second.")
    tokens_per_second = Float(None, allow_none=True, help="Speed of the runner's latest answer.")
    error = Unicode("", help="The latest failure for this model (load failed, crash, bad input).")
    note = Unicode("", help="A hint shown when there is no error (a keep-alive kept for later).")
    remote_host = Unicode(
        "", help="Where a remote model runs (its upstream URL); empty for a local model."
    )
    busy_action = Bool(False, help="True while a Warm up or Unload of this row is in progress.")

    def __init__(
        self,
        model: str,
        *,
        on_warm: Action,
        on_unload: Action,
        on_keep_alive: Action,
        default_keep_alive: float | None = None,
    ) -> None:
        # Labels, not HTML, for the text cells: they stay on one line and end in "…" if long.
        self.name_label = Label(
            model, tooltip=model, style={"font_weight": "bold"}, layout=cell_layout(COLUMNS[0][1])
        )
        self.badge = HTML(layout=Layout(width="auto"))
        self.progress = FloatProgress(
            min=0.0, max=1.0, layout=Layout(width="60px", height="14px", display="none")
        )
        state_cell = HBox([self.badge, self.progress], layout=cell_layout(COLUMNS[1][1]))
        self.runner_label = Label(layout=cell_layout(COLUMNS[2][1]))
        self.memory_label = Label(layout=cell_layout(COLUMNS[3][1]))
        self.context_label = Label(layout=cell_layout(COLUMNS[4][1]))
        self.countdown_label = Label(layout=cell_layout(COLUMNS[5][1]))
        self.speed_label = Label(layout=cell_layout(COLUMNS[6][1]))
        self.warm_button = Button(
            description="Warm up",
            icon="play",
            tooltip="Load the model now",
            layout=Layout(width="auto", flex="0 0 auto"),
        )
        self.unload_button = Button(
            description="Unload",
            icon="eject",
            tooltip="Unload as soon as it is idle",
            layout=Layout(width="auto", flex="0 0 auto"),
        )
        value, text = keep_alive_choice(default_keep_alive)
        self.keep_alive_chooser = Dropdown(
            options=list(KEEP_ALIVE_CHOICES),
            value=value,
            tooltip="How long the model stays loaded after its last use",
            layout=Layout(width="96px"),
        )
        self.custom_keep_alive = Text(
            value=text,
            placeholder="e.g. 2h",
            continuous_update=False,  # apply on Enter or blur, not on every keystroke
            layout=Layout(width="72px", display="" if value == "custom" else "none"),
        )
        self.message = HTML(layout=Layout(flex="1 1 auto", min_width="0"))
        super().__init__(
            [
                self.name_label,
                state_cell,
                self.runner_label,
                self.memory_label,
                self.context_label,
                self.countdown_label,
                self.speed_label,
                self.warm_button,
                self.unload_button,
                self.keep_alive_chooser,
                self.custom_keep_alive,
                self.message,
            ],
            layout=Layout(align_items="center", border_bottom="1px solid #e0e0e0"),
        )
        self.model = model
        # The server value the chooser last followed: the chooser moves only when the server's
        # value changes, so a choice the user just made is not reverted by a stale snapshot.
        self._followed: float | None = None
        self.warm_button.on_click(lambda _button: on_warm(self))
        self.unload_button.on_click(lambda _button: on_unload(self))
        # The panel compares the choice with the server's value, so the chooser following the
        # server (this callback fires for that too) sends nothing.
        self.keep_alive_chooser.observe(lambda _change: on_keep_alive(self), "value")
        self.custom_keep_alive.observe(lambda _change: on_keep_alive(self), "value")
        self._paint(None)

    @property
    def chosen_keep_alive(self) -> str:
        """The keep-alive the chooser shows, as sent to the server ("5m", "-1", "90s")."""
        value = str(self.keep_alive_chooser.value)
        return self.custom_keep_alive.value.strip() if value == "custom" else value

    # ---- server state (runs on the panel's loop thread only) ----------------------------------

    def show(
        self,
        entry: Mapping[str, Any] | None,
        waiting: int,
        now: datetime,
        pull: Mapping[str, Any] | None = None,
    ) -> None:
        """Show one `/api/ps` entry (None: not loaded), the requests waiting for a runner, and the
        model's pull in progress (`{"total", "completed"}` bytes; None when none)."""
        total = int(pull.get("total") or 0) if pull is not None else 0
        completed = int(pull.get("completed") or 0) if pull is not None else 0
        self.pull_progress = min(1.0, completed / total) if pull is not None and total else None
        if pull is not None and self.pull_progress is None:
            self.pull_progress = 0.0  # the manifest is not read yet: no total
        self.pull_bytes = (
            f"{format_size(completed)} / {format_size(total)}" if pull is not None and total else ""
        )
        if entry is None and self.remote_host:
            # A remote model: served elsewhere, nothing to load; shown as "remote" at rest.
            self.state = "remote"
            self.in_flight = self.size = self.context_length = 0
            self.queued = waiting
            self.pid = self.port = self.keep_alive = None
            self.expires_at = ""
        elif entry is None:
            self.state = "pulling" if pull is not None else "queued" if waiting else "unloaded"
            self.in_flight = self.num_parallel = self.size = self.context_length = 0
            self.queued = waiting
            self.load_progress = 0.0
            self.pid = self.port = self.keep_alive = self.tokens_per_second = None
            self.expires_at = ""
        else:
            if entry.get("state") == "loading" and self.state != "loading":
                self.error = ""  # a new load: the last failure is history
            self.state = str(entry.get("state") or "ready")
            self.in_flight = int(entry.get("in_flight") or 0)
            self.num_parallel = int(entry.get("num_parallel") or 1)
            self.queued = int(entry.get("queued") or 0) + waiting
            self.load_progress = float(entry.get("load_progress") or 0.0)
            self.pid = entry.get("pid")
            self.port = entry.get("port")
            self.size = int(entry.get("size") or 0)
            self.context_length = int(entry.get("context_length") or 0)
            self.keep_alive = _number(entry.get("keep_alive"))
            self.expires_at = str(entry.get("expires_at") or "")
            self.tokens_per_second = _number(entry.get("tokens_per_second"))
            self.note = ""
        self._follow_server_keep_alive()
        self._paint(now)

    def show_unknown(self) -> None:
        """The server cannot be reached: nothing is known and no button can work."""
        self.state = "unknown"
        self._paint(None)

    def tick(self, now: datetime) -> None:
        """Advance the countdown (once a second, without asking the server)."""
        self.countdown = self._countdown(now)
        self.countdown_label.value = self.countdown

    def _follow_server_keep_alive(self) -> None:
        # An unload is a keep-alive of 0 on the server for a moment: following it would make the
        # next Warm up send "0s" and unload at once, so the chooser keeps the user's choice.
        if self.keep_alive is None or self.keep_alive == 0 or self.keep_alive == self._followed:
            return
        self._followed = self.keep_alive
        value, text = keep_alive_choice(self.keep_alive)
        if value == "custom":
            self.custom_keep_alive.value = text
        self.keep_alive_chooser.value = value

    def _countdown(self, now: datetime) -> str:
        if self.keep_alive is None or self.state in ("unloaded", "unknown", "queued", "remote"):
            return ""
        if self.state == "expiring":
            return "unloading…"
        if self.keep_alive < 0:
            return "forever"
        if self.state in ("loading", "busy"):
            # The server starts the timer when the last request ends.
            return f"{describe_keep_alive(self.keep_alive)} after idle"
        expires = parse_time(self.expires_at)
        if expires is None:
            return ""
        left = (expires - now).total_seconds()
        return f"unloads in {format_duration(left)}" if left >= 0.5 else "unloading…"

    def _badge_text(self) -> str:
        if self.state == "pulling":
            return f"pulling {self.pull_progress or 0.0:.0%}"
        if self.state == "loading":
            text = f"loading {self.load_progress:.0%}"
        elif self.state == "busy" or (self.state == "remote" and self.in_flight):
            text = f"{self.state} {self.in_flight}/{self.num_parallel}"
        elif self.state == "queued":
            return f"queued {self.queued}"
        else:
            text = self.state
        return f"{text} · queued {self.queued}" if self.queued else text

    def _paint(self, now: datetime | None) -> None:
        loaded = self.pid is not None
        self.badge.value = badge_html(self._badge_text(), self.state)
        pulling = self.state == "pulling"
        self.progress.value = (self.pull_progress or 0.0) if pulling else self.load_progress
        self.progress.layout.display = "" if self.state in ("loading", "pulling") else "none"
        remote = self.state == "remote"
        self.runner_label.value = (
            f"pid {self.pid} · :{self.port}"
            if loaded
            else self.pull_bytes
            if pulling
            else f"→ {self.remote_host}"
            if remote and self.remote_host
            else ""
        )
        # A remote model has no runner here: nothing to warm up, unload or keep alive.
        for control in (self.warm_button, self.unload_button, self.keep_alive_chooser):
            control.layout.display = "none" if remote else ""
        self.memory_label.value = format_size(self.size) if self.size else ""
        self.context_label.value = str(self.context_length) if self.context_length else ""
        speed = self.tokens_per_second
        self.speed_label.value = f"{speed:.{0 if speed >= 100 else 1}f} tok/s" if speed else ""
        custom = self.keep_alive_chooser.value == "custom"
        self.custom_keep_alive.layout.display = "" if custom and not remote else "none"
        known = self.state != "unknown"
        self.warm_button.disabled = (
            not known or self.busy_action or self.state in ("pulling", "loading", "ready", "busy")
        )
        self.unload_button.disabled = (
            not known
            or self.busy_action
            or self.state in ("unloaded", "pulling", "queued", "expiring")
        )
        if self.error:
            self.message.value = (
                f'<span style="color:#c0392b" title="{html.escape(self.error)}">'
                f"{html.escape(self.error)}</span>"
            )
        else:
            self.message.value = f"<small>{html.escape(self.note)}</small>" if self.note else ""
        if now is not None:
            self.tick(now)
        else:
            self.countdown = ""
            self.countdown_label.value = ""


def close_tree(widget: Widget) -> None:
    """Close a widget and every widget inside it (`Box.close` leaves its children open)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


__all__ = [
    "COLUMNS",
    "KEEP_ALIVE_CHOICES",
    "ModelRow",
    "badge_html",
    "cell_layout",
    "close_tree",
    "keep_alive_choice",
]
