"""Rendering for the kernel side: streamed answers, progress lines and model tables.

Streams: each `%%hana` stream has a `StreamState` that the background loop fills chunk by chunk,
and a view (one display handle) that `StreamBoard.pump` refreshes at most every `throttle` seconds.
All display calls happen on the thread that runs the cell: ipykernel 7 routes output from other
threads by a global "current parent" (the latest cell), so an update sent from a worker after the
user ran another cell would land in the wrong cell. The cell's thread as the only publisher avoids
that.

Tables (`Records`, `Details`) are plain data with `_repr_html_` for Lab and `_repr_pretty_` for a
terminal.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from IPython.display import DisplayHandle, display

from hana_client import Answer, BackgroundTask
from hana_client.pull_progress import PullProgress
from hana_protocol.formatting import (
    MODEL_COLUMNS,
    RUNNER_COLUMNS,
    Column,
    format_size,
    records_text,
    table_cells,
)

Bundle = dict[str, str]

# --------------------------------------------------------------------------------------------------
# formatting


def format_stats(completion: Answer) -> str:
    """The footer of a finished answer: "gemma3:270m · 42 tokens · 31.2 tokens/s · load 1.3 s";
    a routed one (`auto`) names the model and tier that answered, the reason and any fallback."""
    parts = [completion.model, f"{completion.eval_count} tokens"]
    route = completion.final.get("hana_route")
    if isinstance(route, Mapping):
        parts[0] = f"{completion.model} → {route.get('model')} ({route.get('reason')})"
        parts[1:1] = [f"skipped {note}" for note in route.get("fallbacks") or []]
    speed = completion.tokens_per_second
    if speed is not None:
        parts.append(f"{speed:.1f} tokens/s")
    if completion.load_duration >= 100_000_000:  # a cold start is worth telling; a warm one is not
        parts.append(f"load {completion.load_duration / 1e9:.1f} s")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------------
# tables


class Records(list[dict[str, Any]]):
    """A list of API records (models, runners) that shows itself as a table.

    Still a plain list of dicts for code: `[m["name"] for m in mgr.models()]`.
    """

    def __init__(
        self, records: Iterable[dict[str, Any]], columns: Sequence[Column], empty: str
    ) -> None:
        super().__init__(records)
        self.columns = list(columns)
        self.empty = empty

    def _cells(self) -> list[list[str]]:
        return table_cells(self, self.columns)

    def to_text(self) -> str:
        """Aligned columns, like `ollama list`."""
        return records_text(self, self.columns) if self else self.empty

    def _repr_html_(self) -> str:
        if not self:
            return f"<p><em>{html.escape(self.empty)}</em></p>"
        head = "".join(f"<th>{html.escape(column.title)}</th>" for column in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self._cells()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.to_text())


def model_table(records: Iterable[dict[str, Any]]) -> Records:
    """`/api/tags` models as a table."""
    return Records(records, MODEL_COLUMNS, "no models installed")


def runner_table(records: Iterable[dict[str, Any]]) -> Records:
    """`/api/ps` runners as a table."""
    return Records(records, RUNNER_COLUMNS, "no models loaded")


class Details(dict[str, Any]):
    """The `/api/show` answer for one model; shows the parts people read as a two-column table."""

    def __init__(self, name: str, info: Mapping[str, Any]) -> None:
        super().__init__(info)
        self.name = name

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, in the order of `ollama show`."""
        details = self.get("details") or {}
        model_info = self.get("model_info") or {}
        arch = str(model_info.get("general.architecture") or details.get("family") or "")
        rows = [
            ("name", self.name),
            ("architecture", arch),
            ("parameters", str(details.get("parameter_size", ""))),
            ("quantization", str(details.get("quantization_level", ""))),
            (
                "context length",
                str(model_info.get(f"{arch}.context_length") or details.get("context_length", "")),
            ),
            ("capabilities", ", ".join(self.get("capabilities") or [])),
            ("parameters set", " ".join(str(self.get("parameters") or "").split())),
            ("system", str(self.get("system") or "")),
            ("template", str(self.get("template") or "")),
        ]
        return [(label, value) for label, value in rows if value]

    def to_text(self) -> str:
        """Label-aligned lines; long templates are cut to their first line."""
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(
            f"{label.ljust(width)}    {_first_line(value, 80)}" for label, value in rows
        )

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'><pre style='margin:0;white-space:pre-wrap'>"
            f"{html.escape(value)}</pre></td></tr>"
            for label, value in self.rows()
        )
        return f"<table><tbody>{body}</tbody></table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.to_text())


def _first_line(text: str, limit: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    cut = line if len(line) <= limit else line[: limit - 1] + "…"
    return cut + (" …" if "\n" in text.strip() and cut == line else "")


# --------------------------------------------------------------------------------------------------
# streams


class StreamState:
    """One streamed answer as it grows. Filled on the background loop, read by the cell's thread."""

    def __init__(self, model: str, label: str, *, json_format: bool = False) -> None:
        self.model = model
        self.label = label
        self.json_format = json_format
        self.completion = Answer(model=model)
        self.status = "waiting"  # waiting | pulling | streaming | done | error | canceled
        self.error: str | None = None
        #: The pull of a model the server did not have, when the answer had to wait for one.
        self.pull: PullProgress | None = None
        # time.monotonic() of the request, its first chunk and its end: to compare streams.
        self.started: float | None = None
        self.first_chunk: float | None = None
        self.finished: float | None = None
        self.version = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """The request is about to be sent."""
        with self._lock:
            self.started = time.monotonic()

    def pulling(self, progress: PullProgress) -> None:
        """The model is being pulled first; `progress` is drawn until the answer starts."""
        with self._lock:
            self.pull = progress
            self.status = "pulling"
            self.version += 1

    def pulled(self) -> None:
        """The pull is through; the model loads next (the pull's summary stays for the footer)."""
        with self._lock:
            if self.status == "pulling":
                self.status = "waiting"
                self.version += 1

    @property
    def revision(self) -> int:
        """Changes whenever the view would (an answer chunk, or a pull's progress)."""
        pull = self.pull
        return self.version + (pull.version if pull is not None else 0)

    def add(self, chunk: Mapping[str, Any]) -> None:
        """Fold in one API chunk."""
        with self._lock:
            if self.first_chunk is None:
                self.first_chunk = time.monotonic()
            self.completion.add(chunk)
            self.status = "done" if self.completion.done else "streaming"
            if self.completion.done:
                self.finished = time.monotonic()
            self.version += 1

    def end(self, status: str, error: str | None = None) -> None:
        """Mark the stream failed or canceled (a finished stream keeps "done")."""
        with self._lock:
            if self.status not in ("waiting", "pulling", "streaming"):
                return
            self.status, self.error = status, error
            self.finished = time.monotonic()
            self.version += 1

    @property
    def text(self) -> str:
        """The answer so far."""
        return self.completion.text

    @property
    def active(self) -> bool:
        """True until the stream is done, failed or canceled."""
        return self.status in ("waiting", "pulling", "streaming")

    def render(self, *, markdown: bool, header: bool) -> Bundle:
        """The display bundle for the current state."""
        with self._lock:
            status, text, error = self.status, self.completion.text, self.error
            footer = format_stats(self.completion) if status == "done" else ""
            pull = self.pull
        if footer and pull is not None and pull.done and pull.finished is not None:
            seconds = pull.finished - pull.started
            footer += f" · pulled {format_size(pull.downloaded)} in {seconds:.1f} s"
        plain: list[str] = [f"[{self.label}]"] if header else []
        md: list[str] = [f"**{_md_escape(self.label)}**"] if header else []
        if status == "waiting":
            plain.append(f"loading {self.model}…")
            md.append(f"*loading {_md_escape(self.model)}…*")
        elif status == "pulling" and pull is not None:
            lines = "\n".join(pull.lines())
            plain += [f"pulling {self.model}…", lines]
            md += [f"*pulling {_md_escape(self.model)}…*", f"```\n{lines}\n```"]
        elif status == "error":
            plain.append(f"✗ {error}")
            md.append(f"**✗** {_md_escape(error or '')}")
        else:
            body = text if text or status == "streaming" else "(empty answer)"
            plain.append(body)
            md.append(f"```json\n{body}\n```" if self.json_format else body)
            tail = footer if status == "done" else ("⏹ interrupted" if status == "canceled" else "")
            if tail:
                plain.append(f"[{tail}]")
                md.append(f"<sub>{html.escape(tail)}</sub>")
        bundle = {"text/plain": "\n".join(plain)}
        if markdown:
            bundle["text/markdown"] = "\n\n".join(md)
        return bundle


def _md_escape(text: str) -> str:
    # Labels and messages are ours or the server's, not Markdown: keep `*`, `_` and `<` literal.
    return html.escape(text).replace("*", r"\*").replace("_", r"\_")


class StreamBoard:
    """The outputs of one `%%hana` cell: one view per stream, refreshed from the cell's thread.

    In a notebook each stream owns a display handle updated in place. In a terminal, where an
    update would print the whole answer again, a single stream prints its new text as it arrives
    and parallel streams print once each, when they finish.
    """

    def __init__(self, states: Sequence[StreamState], *, markdown: bool, live: bool) -> None:
        self.states = list(states)
        self.markdown = markdown
        self.live = live
        self.header = len(self.states) > 1
        self._handles: list[DisplayHandle | None] = []
        self._shown: list[int] = [-1] * len(self.states)
        self._printed: list[int] = [0] * len(self.states)
        self._pull_printed: list[str] = [""] * len(self.states)

    def show(self) -> None:
        """Display every placeholder at once, so outputs keep the order of the requests."""
        for index, state in enumerate(self.states):
            if self.live:
                self._shown[index] = state.revision
                bundle = state.render(markdown=self.markdown, header=self.header)
                self._handles.append(display(bundle, raw=True, display_id=True))
            else:
                self._handles.append(None)

    def pump(self, task: BackgroundTask, throttle: float) -> None:
        """Refresh the views until `task` ends; a KeyboardInterrupt cancels it and is re-raised."""
        try:
            while not task.wait(throttle):
                self.refresh()
        except KeyboardInterrupt:
            task.cancel(wait=5.0)
            for state in self.states:
                state.end("canceled")
            self.refresh()
            raise
        self.refresh()

    def refresh(self) -> None:
        """Send the states that changed since the last refresh."""
        for index, state in enumerate(self.states):
            if self.live:
                self._update_live(index, state)
            else:
                self._update_terminal(index, state)

    def clear(self, state: StreamState) -> None:
        """Empty one view (its error is reported once, by the cell's error line)."""
        index = self.states.index(state)
        handle = self._handles[index]
        if handle is not None:
            handle.update({"text/plain": ""}, raw=True)
        self._shown[index] = state.revision

    def _update_live(self, index: int, state: StreamState) -> None:
        version = state.revision
        if version == self._shown[index]:
            return
        handle = self._handles[index]
        assert handle is not None
        handle.update(state.render(markdown=self.markdown, header=self.header), raw=True)
        self._shown[index] = version

    def _update_terminal(self, index: int, state: StreamState) -> None:
        version = state.revision
        if version == self._shown[index]:
            return
        self._shown[index] = version
        if state.status == "pulling" and state.pull is not None:
            # A terminal cannot redraw bars in place: print each new step of the pull once.
            status = state.pull.status
            if status and status != self._pull_printed[index]:
                self._pull_printed[index] = status
                print(f"{state.label}: {status}" if self.header else status, flush=True)
            return
        if self.header:
            if not state.active:
                print(state.render(markdown=False, header=True)["text/plain"], end="\n\n")
            return
        text = state.text
        sys.stdout.write(text[self._printed[index] :])
        self._printed[index] = len(text)
        if not state.active:
            lines = state.render(markdown=False, header=False)["text/plain"].splitlines()
            tail = lines[-1] if lines and state.status != "error" else ""
            sys.stdout.write(f"\n{tail}\n" if state.status != "error" else "\n")
        sys.stdout.flush()


class ProgressView:
    """One line of progress for create: the latest status, with a percentage if known."""

    def __init__(self, title: str, *, live: bool, throttle: float) -> None:
        self.title = title
        self.live = live
        self.throttle = throttle
        self._handle: DisplayHandle | None = None
        self._last_status = ""
        self._last_update = 0.0

    def update(self, chunk: Mapping[str, Any]) -> None:
        """Show one progress chunk (status changes at once, percentages at most every throttle)."""
        status = str(chunk.get("status", ""))
        total, completed = int(chunk.get("total") or 0), int(chunk.get("completed") or 0)
        line = f"{self.title}: {status}"
        if total:
            line += (
                f"  {100 * completed / total:3.0f}% ({format_size(completed)}/{format_size(total)})"
            )
        now = time.monotonic()
        if status == self._last_status and now - self._last_update < self.throttle:
            return
        changed = status != self._last_status
        self._last_status, self._last_update = status, now
        if self.live:
            if self._handle is None:
                self._handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                self._handle.update({"text/plain": line}, raw=True)
        elif changed:
            print(line)
