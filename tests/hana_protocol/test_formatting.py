"""Sizes, times and the list/ps tables, formatted once for the CLI and the kernel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hana_protocol.formatting import (
    MODEL_COLUMNS,
    RUNNER_COLUMNS,
    format_relative,
    format_size,
    parse_time,
    records_text,
)

RUNNER = {
    "name": "tiny:a",
    "digest": "ab" * 32,
    "size": 291_000_000,
    "size_vram": 0,
    "context_length": 4096,
    "state": "busy",
    "in_flight": 1,
    "num_parallel": 2,
    "queued": 3,
    "pid": 4242,
    "port": 40001,
}


def test_sizes_and_times() -> None:
    assert format_size(512) == "512 B"
    assert format_size(291_000_000) == "291 MB"
    assert format_size(1_234_000_000) == "1.2 GB"
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert format_relative(now - timedelta(seconds=1), now) == "just now"
    assert format_relative(now - timedelta(days=1), now) == "1 day ago"
    assert parse_time("2025-01-01T10:00:00+00:00") == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert parse_time("not a time") is None


def test_ps_table_has_the_runner_columns() -> None:
    expires = datetime.now(UTC) + timedelta(minutes=4, seconds=30)
    runner = {**RUNNER, "expires_at": expires.isoformat()}
    header, row = records_text([runner], RUNNER_COLUMNS).splitlines()
    assert header.split() == [c.title for c in RUNNER_COLUMNS]
    assert "tiny:a" in row and "abababababab" in row and "291 MB" in row
    assert "busy 1/2 +3 queued" in row and "100% CPU" in row and "4242" in row
    assert "4 minutes from now" in row


def test_an_empty_list_is_its_header() -> None:
    assert records_text([], MODEL_COLUMNS).split() == ["NAME", "ID", "SIZE", "MODIFIED"]
