"""One blob's download: parallel Range parts into a partial file, resumable, verified, committed.

    blobs/.partial-<hex>        the data, preallocated to the blob's size (sparse)
    blobs/.partial-<hex>.json   {"digest", "size", "parts": [[offset, size, completed], ...]}

Neither name is ever a blob's name, so nothing half-written is visible as a model. `completed`
counts only bytes already written to the data file, and is checkpointed about once a second and
at the end of every attempt (cancellation included), so a pull cancelled, failed, or cut off by a
server restart resumes where it stopped. The whole file is hashed (in a thread) before the
rename that makes it a blob; a mismatch deletes both files.

Writes and hashing run in threads, and the next chunk is read from the network while the last
one is written, so the event loop only moves buffers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from hana_protocol.errors import HanaError
from hana_server.store.blobs import PARTIAL_PREFIX, BlobStore, parse_digest
from hana_server.store.registry import BlobSource

log = logging.getLogger("hana.pull")

MB = 1000 * 1000
MIN_PART = 100 * MB  # Ollama's part size rule: size/16 clamped to [100 MB, 1000 MB]
MAX_PART = 1000 * MB
MAX_PARTS_IN_FLIGHT = 16
WRITE_BATCH = 4 << 20  # bytes gathered before one pwrite in a thread
CHECKPOINT_SECONDS = 1.0
ATTEMPTS = 6
MAX_IOVECS = 512  # chunks per pwritev, well under IOV_MAX


class DigestMismatch(HanaError):
    """The downloaded bytes do not hash to the digest the manifest names."""


def part_plan(size: int, min_part: int = MIN_PART) -> list[list[int]]:
    """`[offset, size, completed]` per part; integer division can leave a tiny last part."""
    part = max(min_part, min(MAX_PART, size // 16))
    return [[offset, min(part, size - offset), 0] for offset in range(0, size, part)] or [[0, 0, 0]]


def partial_paths(blobs: BlobStore, digest: str) -> tuple[Path, Path]:
    hexdigest = parse_digest(digest).removeprefix("sha256:")
    data = blobs.directory / f"{PARTIAL_PREFIX}{hexdigest}"
    return data, data.with_name(data.name + ".json")


def partial_progress(blobs: BlobStore, digest: str) -> int:
    """Bytes of `digest` already downloaded by an earlier, unfinished pull."""
    _, state = partial_paths(blobs, digest)
    try:
        return sum(part[2] for part in json.loads(state.read_bytes())["parts"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return 0


class BlobDownload:
    """Downloads one blob into the store. Create it, then `await run(source_factory)`; read
    `completed` for progress at any time (bytes on disk, earlier runs included)."""

    def __init__(self, blobs: BlobStore, digest: str, size: int, min_part: int = MIN_PART):
        self.blobs = blobs
        self.digest = parse_digest(digest)
        self.size = size
        self.min_part = min_part
        self.data_path, self.state_path = partial_paths(blobs, digest)
        self.parts: list[list[int]] = []
        self.received = 0  # bytes taken off the network in this run (benchmarks, tests)
        self._last_checkpoint = 0.0
        # The sha256 follows the contiguous written prefix in a thread while parts download,
        # so verifying costs no second pass over the file.
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._written = asyncio.Event()

    @property
    def completed(self) -> int:
        return sum(part[2] for part in self.parts)

    async def run(
        self,
        client: Callable[[str], httpx.AsyncClient],
        source: Callable[[], Awaitable[BlobSource]],
    ) -> None:
        """Download the missing parts, verify, and rename into `blobs/sha256-<hex>`.
        `source()` gives a (fresh) direct URL, asked again after a failed attempt; `client(url)`
        the HTTP client for a URL."""
        await asyncio.to_thread(self._open)
        fd = await asyncio.to_thread(os.open, self.data_path, os.O_RDWR)
        try:
            sources = [await source()]

            async def fresh_source() -> BlobSource:
                sources[0] = await source()
                return sources[0]

            pending = [p for p in self.parts if p[2] < p[1]]
            limit = asyncio.Semaphore(MAX_PARTS_IN_FLIGHT)

            async def one(part: list[int]) -> None:
                async with limit:
                    await self._part(client, fd, part, sources, fresh_source)

            try:
                async with asyncio.TaskGroup() as group:
                    for part in pending:
                        group.create_task(one(part))
                    group.create_task(self._follow_hash(fd))
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._save_state))
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(os.close, fd))
        await asyncio.to_thread(self._verify_and_commit)

    def _contiguous(self) -> int:
        """End of the prefix of the blob that is on disk."""
        end = 0
        for offset, size, done in self.parts:
            if offset != end:
                break
            end = offset + done
            if done < size:
                break
        return end

    async def _follow_hash(self, fd: int) -> None:
        while self._hashed < self.size:
            target = self._contiguous()
            if target > self._hashed:
                await asyncio.to_thread(self._hash_to, fd, target)
            else:
                self._written.clear()
                await self._written.wait()

    def _hash_to(self, fd: int, target: int) -> None:
        while self._hashed < target:
            data = os.pread(fd, min(WRITE_BATCH, target - self._hashed), self._hashed)
            if not data:
                raise OSError(f"{self.data_path} is shorter than {target} bytes")
            self._hash.update(data)
            self._hashed += len(data)

    # ------------------------------------------------------------------ parts

    async def _part(
        self,
        client: Callable[[str], httpx.AsyncClient],
        fd: int,
        part: list[int],
        sources: list[BlobSource],
        fresh_source: Callable[[], Awaitable[BlobSource]],
    ) -> None:
        for attempt in range(ATTEMPTS):
            try:
                await self._attempt(client, fd, part, sources[0])
                return
            except (httpx.HTTPError, PartError) as error:
                if attempt == ATTEMPTS - 1:
                    reason = str(error) or type(error).__name__
                    raise HanaError(f"max retries exceeded: {reason}") from error
                log.info(
                    "%s part @%d: %s; retrying from %d", self.digest[:19], part[0], error, part[2]
                )
                await asyncio.to_thread(self._save_state)
                # Jittered back-off: quick for a dropped connection, patient for an outage.
                await asyncio.sleep(min(8.0, 0.1 * 3**attempt) * random.uniform(0.5, 1.5))
                if isinstance(error, PartError) and error.new_url:
                    await fresh_source()

    async def _attempt(
        self,
        client: Callable[[str], httpx.AsyncClient],
        fd: int,
        part: list[int],
        source: BlobSource,
    ) -> None:
        offset, size, done = part
        start, end = offset + done, offset + size - 1
        headers = {**source.headers, "Range": f"bytes={start}-{end}"}
        async with client(source.url).stream("GET", source.url, headers=headers) as response:
            if response.status_code >= 400:
                # An expired signed URL (403) or a CDN hiccup: ask the registry for a new URL.
                raise PartError(f"{response.status_code} from {source.url}", new_url=True)
            if response.status_code == 200 and start != 0:
                raise PartError("the blob server ignored the Range header", new_url=True)
            expected = end - start + 1
            pos = start  # where `chunks` go
            chunks: list[bytes] = []
            buffered = 0
            writing: asyncio.Future[None] | None = None

            async def flush() -> None:
                # One write in flight while the next batch is read from the network.
                nonlocal writing, pos, chunks, buffered
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._write(fd, part, chunks, pos, buffered))
                pos += buffered
                chunks, buffered = [], 0

            try:
                async for chunk in response.aiter_raw():
                    left = end + 1 - (pos + buffered)
                    if len(chunk) > left:
                        chunk = chunk[:left]  # a 200 to a Range request: the rest is not ours
                    chunks.append(chunk)
                    buffered += len(chunk)
                    self.received += len(chunk)
                    if buffered >= WRITE_BATCH or len(chunks) >= MAX_IOVECS:
                        await flush()
                    if pos + buffered > end:
                        break
            finally:
                if chunks:
                    await asyncio.shield(flush())
                if writing is not None:
                    await asyncio.shield(writing)
            if pos - start < expected:
                raise PartError(f"unexpected EOF after {pos - start} of {expected} bytes")

    async def _write(self, fd: int, part: list[int], chunks: list[bytes], at: int, n: int) -> None:
        await asyncio.to_thread(write_all, fd, chunks, at)
        part[2] += n
        self._written.set()
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_SECONDS:
            self._last_checkpoint = now
            await asyncio.to_thread(self._save_state)

    # ------------------------------------------------------------------ files (threads)

    def _open(self) -> None:
        """Resume a matching earlier partial download, or start a fresh one."""
        self.blobs.directory.mkdir(parents=True, exist_ok=True)
        try:
            state = json.loads(self.state_path.read_bytes())
            if (
                state["digest"] == self.digest
                and state["size"] == self.size
                and self.data_path.stat().st_size == self.size
            ):
                self.parts = [[int(v) for v in part] for part in state["parts"]]
                log.info("resuming %s at %d of %d bytes", self.digest, self.completed, self.size)
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.parts = part_plan(self.size, self.min_part)
        with self.data_path.open("wb") as f:
            f.truncate(self.size)  # sparse: parts write at their offsets
        self._save_state()

    def _save_state(self) -> None:
        if not self.parts:
            return
        state = {"digest": self.digest, "size": self.size, "parts": self.parts}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _verify_and_commit(self) -> None:
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            self.discard()
            raise DigestMismatch(
                f"digest mismatch, file must be downloaded again: want {self.digest}, got {got}"
            )
        if not self.blobs.adopt(self.data_path, self.digest):
            self.data_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.data_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)


def write_all(fd: int, chunks: list[bytes], at: int) -> None:
    """pwritev `chunks` at offset `at`, finishing a short write."""
    written = os.pwritev(fd, chunks, at)
    rest = b"".join(chunks)[written:] if written < sum(map(len, chunks)) else b""
    while rest:
        n = os.pwrite(fd, rest, at + written)
        written += n
        rest = rest[n:]


class PartError(Exception):
    """One attempt at a part failed in a way worth retrying."""

    def __init__(self, message: str, new_url: bool = False) -> None:
        super().__init__(message)
        self.new_url = new_url
