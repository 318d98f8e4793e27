"""Blobs on real files: verified, atomic writes that leave nothing behind on failure."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hana_server.store.store import ModelStore
from store_files import blob_files, sha256

from hana_protocol.errors import InvalidRequest


def test_write_blob(store: ModelStore) -> None:
    data = b"hello blob"
    assert store.write_blob(sha256(data), [data[:5], data[5:]]) is True
    assert store.has_blob(sha256(data))
    assert store.blob_path(sha256(data)).read_bytes() == data
    assert store.write_blob(sha256(data), [b"never read"]) is False
    assert store.blob_path(sha256(data)).read_bytes() == data


def test_write_blob_digest_mismatch_leaves_nothing_behind(store: ModelStore) -> None:
    wanted = sha256(b"expected content")
    with pytest.raises(InvalidRequest) as info:
        store.write_blob(wanted, [b"other content"])
    assert info.value.message == (
        f"digest mismatch, expected {wanted}, got {sha256(b'other content')}"
    )
    assert blob_files(store.blobs_dir) == set()
    assert not store.has_blob(wanted)


def test_write_blob_interrupted_leaves_nothing_behind(store: ModelStore) -> None:
    def chunks():
        yield b"first half"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.write_blob(sha256(b"first half and more"), chunks())
    assert blob_files(store.blobs_dir) == set()


def test_invalid_digest(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="invalid digest"):
        store.blob_path("sha256:../../etc/passwd")


def test_stale_temp_files_are_swept_when_the_store_opens(tmp_path: Path) -> None:
    """A temp file a dead writer left a day ago goes; one a live writer may still use stays."""
    blobs_dir = tmp_path / "models" / "blobs"
    blobs_dir.mkdir(parents=True)
    stale, fresh = blobs_dir / ".tmp-dead-writer", blobs_dir / ".tmp-live-writer"
    stale.write_bytes(b"half a blob")
    fresh.write_bytes(b"being written")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    ModelStore(tmp_path / "models")
    assert blob_files(blobs_dir) == {".tmp-live-writer"}


def test_import_file_hashes_first_only_to_skip_a_copy(store: ModelStore, tmp_path: Path) -> None:
    """Importing bytes that are already a blob reports no copy and leaves no temp file."""
    source = tmp_path / "weights.bin"
    source.write_bytes(b"weights" * 1000)
    progress: list[str] = []
    digest = store.import_file(source, progress.append)
    assert digest == sha256(source.read_bytes())
    assert progress == ["copying file weights.bin"]
    progress.clear()
    assert store.import_file(source, progress.append) == digest
    assert progress == []
    assert blob_files(store.blobs_dir) == {digest.replace(":", "-")}
