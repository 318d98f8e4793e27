"""Folding and drawing Ollama's pull stream (no server: the chunks are Ollama's documented ones)."""

from __future__ import annotations

import io

from hana_client.pull_progress import PullBars, PullProgress

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def _layer(digest: str, total: int, completed: int | None = None) -> dict[str, object]:
    chunk: dict[str, object] = {"status": f"pulling {digest[7:19]}", "digest": digest}
    chunk["total"] = total
    if completed:
        chunk["completed"] = completed
    return chunk


def test_resumed_bytes_count_as_there_not_as_downloaded() -> None:
    progress = PullProgress("m:1")
    progress.add({"status": "pulling manifest"})
    progress.add(_layer(A, 2000, 1500))  # resumed: 1500 bytes from an earlier run
    progress.add(_layer(A, 2000, 1200))  # a rolled-back attempt never moves the bar backwards
    progress.add(_layer(A, 2000, 2000))
    progress.add(_layer(B, 10, 10))
    assert (progress.total, progress.completed, progress.downloaded) == (2010, 2010, 500)
    assert not progress.done
    progress.add({"status": "success"})
    assert progress.done and progress.lines()[-1] == "success"


def test_bars_one_per_layer_then_the_statuses() -> None:
    out = io.StringIO()
    said: list[str] = []
    bars = PullBars(file=out, say=said.append)
    for chunk in [
        {"status": "pulling manifest"},
        _layer(A, 2000),
        _layer(A, 2000, 900),
        _layer(A, 2000, 1900),  # the last tick may stop short of the total
        _layer(B, 10, 10),
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]:
        bars(chunk)
    bars.close()
    assert said == ["pulling manifest", "verifying sha256 digest", "writing manifest", "success"]
    assert [bar.n for bar in bars.bars.values()] == [2000, 10]  # complete once a later step began
    drawn = [line.rsplit("\r", 1)[-1] for line in out.getvalue().split("\n") if line.strip()]
    assert drawn[0].startswith("pulling aaaaaaaaaaaa: 100%|") and "2.00k/2.00k" in drawn[0]
    assert drawn[1].startswith("pulling bbbbbbbbbbbb: 100%|")
