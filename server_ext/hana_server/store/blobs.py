"""Content-addressed blobs (`blobs/sha256-<hex>`): digests, atomic writes, file import, sweeping.

Every write goes to a synced temp file first and is renamed into place after its digest is
checked, so readers never see a partial blob. Temp files left by a writer that died are swept
when the store opens.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hana_protocol.digests import blob_digest
from hana_protocol.errors import InvalidRequest

log = logging.getLogger("hana.store")

Progress = Callable[[str], None]

DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
TEMP_PREFIX = ".tmp-"
# A temp file this old belongs to a writer that died; younger ones may still be in use.
STALE_TEMP_SECONDS = 24 * 3600
# An unfinished pull's data and state (store/transfer.py): kept for a resume, unless untouched
# this long. Never a blob's name, so never visible as one.
PARTIAL_PREFIX = ".partial-"
STALE_PARTIAL_SECONDS = 14 * 24 * 3600
CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """`sha256:<hex>` or `sha256-<hex>` -> canonical `sha256:<lowercase hex>`."""
    match = DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidRequest(f"invalid digest format: {digest!r}")
    return "sha256:" + match.group(1).lower()


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (renames), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_temp_path(directory: Path) -> Path:
    """A fresh, not yet existing temp path in `directory`, for a file renamed into place later."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def write_temp(chunks: Iterable[bytes], directory: Path) -> tuple[Path, str]:
    """Write `chunks` to a synced temp file in `directory`; returns it and the `sha256:<hex>`
    digest of its bytes (hashed while writing). Nothing is left behind if `chunks` fails."""
    tmp = new_temp_path(directory)
    h = hashlib.sha256()
    try:
        with tmp.open("xb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, "sha256:" + h.hexdigest()


def replace_file(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temp file in the same directory and a rename."""
    tmp, _ = write_temp([data], target.parent)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


class BlobStore:
    """The blobs directory of a model store. Safe for concurrent writers: a blob appears whole
    or not at all, and two writers of the same digest both succeed."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, digest: str) -> Path:
        return self.directory / parse_digest(digest).replace(":", "-")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def temp_path(self) -> Path:
        """A fresh temp path in blobs/, for a file that `adopt` renames into place."""
        return new_temp_path(self.directory)

    def write(self, digest: str, chunks: Iterable[bytes]) -> bool:
        """Store `chunks` as blob `digest`; False (chunks unread) if it already exists.
        Raises InvalidRequest on a digest mismatch, leaving nothing behind."""
        digest = parse_digest(digest)
        if self.has(digest):
            return False
        tmp, actual = write_temp(chunks, self.directory)
        if actual != digest:
            tmp.unlink(missing_ok=True)
            raise InvalidRequest(f"digest mismatch, expected {digest}, got {actual}")
        return self._commit(tmp, digest)

    def write_bytes(self, data: bytes) -> tuple[str, bool]:
        """Store `data` under its own digest; returns the digest and whether the blob is new."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return digest, self.write(digest, [data])

    def adopt(self, path: Path, digest: str) -> bool:
        """Move `path`, whose sha256 the caller has computed, into blobs as `digest`.
        False if the blob already existed; then `path` is left where it is."""
        digest = parse_digest(digest)
        if self.has(digest):
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync_path(path)
        os.chmod(path, 0o644)
        os.replace(path, self.path(digest))
        return True

    def import_file(self, path: Path, progress: Progress | None = None) -> str:
        """Copy the file at `path` into blobs (hashing while copying); returns `sha256:<hex>`."""
        path = Path(path)
        # Hash before copying only if a blob of the same size exists: re-creating a model from
        # the same GGUF then costs one read instead of a multi-GB write that is thrown away.
        if self._blob_of_size_exists(path.stat().st_size):
            digest = blob_digest(path)
            if self.has(digest):
                return digest
        if progress:
            progress(f"copying file {path.name}")
        with path.open("rb") as f:
            tmp, digest = write_temp(iter(functools.partial(f.read, CHUNK), b""), self.directory)
        self._commit(tmp, digest)
        return digest

    def sync(self) -> None:
        """Put the blobs' renames on disk (before a manifest may point at them)."""
        fsync_path(self.directory)

    def remove(self, digests: Iterable[str]) -> None:
        """Delete blobs (those no manifest refers to any more)."""
        for digest in digests:
            log.debug("removing unused blob %s", digest)
            self.path(digest).unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        now = time.time()
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                cutoff = now - STALE_TEMP_SECONDS
            elif entry.name.startswith(PARTIAL_PREFIX):
                cutoff = now - STALE_PARTIAL_SECONDS
            else:
                continue
            if entry.stat().st_mtime < cutoff:
                log.info("removing stale temp file %s", entry.path)
                Path(entry.path).unlink(missing_ok=True)

    def _commit(self, tmp: Path, digest: str) -> bool:
        target = self.path(digest)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, target)
        return True

    def _blob_of_size_exists(self, size: int) -> bool:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return False
        return any(e.name.startswith("sha256-") and e.stat().st_size == size for e in entries)
