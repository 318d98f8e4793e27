"""How people read the API's records: sizes, times, and the `list` / `ps` tables.

One formatting for the `hana` CLI (plain text) and the kernel's tables (text and HTML), so
`hana ps` and `%hana ps` show the same columns with the same words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_UNITS = ((86400 * 365, "year"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def format_size(size: float) -> str:
    """Bytes as Ollama's CLI writes them: "291 MB", "1.2 GB"."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (nanoseconds allowed) as an aware datetime."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def format_relative(when: datetime | None, now: datetime | None = None) -> str:
    """Like "3 minutes ago" or "4 minutes from now"; "Forever" for more than 20 years ahead."""
    if when is None:
        return ""
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds > 20 * 365 * 86400:
        return "Forever"
    if abs(seconds) < 2:
        return "now" if seconds >= 0 else "just now"
    size, unit = next((size, unit) for size, unit in _UNITS if abs(seconds) >= size)
    count = int(abs(seconds) // size)
    text = f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{text} from now" if seconds >= 0 else f"{text} ago"


@dataclass(frozen=True)
class Column:
    """A table column: its title and how to read a cell from one record."""

    title: str
    value: Callable[[Mapping[str, Any]], str]


def table_cells(records: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    """The cells of each record, one row per record."""
    return [[column.value(record) for column in columns] for record in records]


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as aligned columns, like `ollama list`."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _processor(record: Mapping[str, Any]) -> str:
    size, vram = int(record.get("size") or 0), int(record.get("size_vram") or 0)
    if vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    cpu = round(100 * (size - vram) / size)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _until(record: Mapping[str, Any]) -> str:
    when = parse_time(record.get("expires_at"))
    if when is not None and when < datetime.now(UTC):
        return "Stopping..."
    return format_relative(when)


def _state(record: Mapping[str, Any]) -> str:
    # hana's /api/ps adds the runner state to Ollama's fields; plain Ollama leaves this empty.
    state = str(record.get("state") or "")
    if state == "busy":
        state = f"busy {record.get('in_flight', 0)}/{record.get('num_parallel', 1)}"
    if record.get("queued"):
        state += f" +{record['queued']} queued"
    return state


MODEL_COLUMNS = (
    Column("NAME", lambda r: str(r.get("name", ""))),
    Column("ID", lambda r: str(r.get("digest", ""))[:12]),
    Column("SIZE", lambda r: format_size(int(r.get("size") or 0))),
    Column("MODIFIED", lambda r: format_relative(parse_time(r.get("modified_at")))),
)
"""`/api/tags` records, as `ollama list` shows them."""

RUNNER_COLUMNS = (
    Column("NAME", lambda r: str(r.get("name", ""))),
    Column("ID", lambda r: str(r.get("digest", ""))[:12]),
    Column("SIZE", lambda r: format_size(int(r.get("size") or 0))),
    Column("PROCESSOR", _processor),
    Column("CONTEXT", lambda r: str(r.get("context_length", ""))),
    Column("STATE", _state),
    Column("PID", lambda r: str(r.get("pid") or "")),
    Column("PORT", lambda r: str(r.get("port") or "")),
    Column("UNTIL", _until),
)
"""`/api/ps` records: `ollama ps`'s columns plus hana's runner state, process and port."""


def records_text(records: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Records as an aligned text table with a header row (only the header when empty)."""
    return text_table([[column.title for column in columns], *table_cells(records, columns)])
