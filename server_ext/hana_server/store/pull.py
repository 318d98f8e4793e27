"""`PullManager`: pulls models from Ollama-compatible registries into the store, with progress.

One pull: `pulling manifest`, then each layer and the config in order (`pulling <hex12>` with
`total`/`completed`; a blob already in the store is one full event and no download), `verifying
sha256 digest`, `writing manifest` (the registry's bytes, verbatim and atomically), `removing
unused layers` if the name's old version left orphans, `success`, as Ollama streams them.

Downloads are shared per digest: two pulls of one model (or of two models with a common layer)
wait on one transfer. When the last waiter leaves (client disconnect), the transfer is cancelled
and its partial file stays for a later resume. While a pull runs, its blobs are pinned in the
store, so no delete's sweep removes a blob a manifest is about to name.

Progress also goes onto the scheduler's event bus as `{"event": "pull", "model", "status",
"total", "completed"}` (status `pulling`, `success` or `error`, with `error` then), at most
every `PUBLISH_SECONDS` per model, and `snapshot()` lists the pulls in progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from hana_protocol.errors import HanaError
from hana_server.store.blobs import parse_digest
from hana_server.store.names import ModelName
from hana_server.store.registry import RegistryError, RegistrySession, transfer_client
from hana_server.store.store import ModelStore
from hana_server.store.transfer import (
    MIN_PART,
    BlobDownload,
    partial_progress,
)

log = logging.getLogger("hana.pull")

TICK_SECONDS = 0.06  # Ollama's progress interval, per waiter
PUBLISH_SECONDS = 0.25
MEDIA_TENSOR = "application/vnd.ollama.image.tensor"
LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} TB"


@dataclass
class _Shared:
    """A download and the pulls waiting on it."""

    download: BlobDownload
    task: asyncio.Task[None]
    waiters: int = 0
    abandoned: bool = False


@dataclass
class PullState:
    """What the panel shows of one pull."""

    model: str
    total: int
    done: int = 0  # bytes of layers already finished
    current: int = 0  # bytes of the layer being downloaded
    published: float = 0.0

    @property
    def completed(self) -> int:
        return self.done + self.current

    def event(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "event": "pull",
            "model": self.model,
            "status": status,
            "total": self.total,
            "completed": self.completed,
            **extra,
        }


class PullManager:
    """Every pull of one server. `pull(name)` checks the name at once (400 before streaming) and
    returns the progress stream."""

    def __init__(
        self,
        store: ModelStore,
        publish: Callable[[dict[str, Any]], None] | None = None,
        min_part: int = MIN_PART,
    ) -> None:
        self.store = store
        self.publish = publish or (lambda _event: None)
        self.min_part = min_part
        self._downloads: dict[str, _Shared] = {}
        self._pulls: dict[str, PullState] = {}
        self._clients: dict[bool, httpx.AsyncClient] = {}

    def client(self, url: str) -> httpx.AsyncClient:
        """The HTTP client for `url`: proxies from the environment, except for loopback
        (httpx does not exempt it, and a proxy would break a local registry)."""
        host = urlsplit(url).hostname or ""
        direct = host.startswith(LOOPBACK)
        if direct not in self._clients:
            self._clients[direct] = transfer_client(trust_env=not direct)
        return self._clients[direct]

    async def close(self) -> None:
        for shared in list(self._downloads.values()):
            shared.task.cancel()
        for shared in list(self._downloads.values()):
            await asyncio.wait({shared.task})
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """The pulls in progress: `{"model", "total", "completed"}` each."""
        return [
            {"model": s.model, "total": s.total, "completed": s.completed}
            for s in self._pulls.values()
        ]

    def pull(self, model: str, insecure: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Progress chunks of pulling `model`; InvalidModelName (400) at once for a bad name."""
        if not model:
            raise HanaError("invalid model name", status=400)
        return self._pull(ModelName.parse(model), insecure)

    async def _pull(self, name: ModelName, insecure: bool) -> AsyncIterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        session = RegistrySession(self.client(f"http://{name.host}/"), name, insecure)
        try:
            data = await session.manifest()
            layers = parse_layers(data)
        except HanaError as error:
            raise RegistryError(f"pull model manifest: {error.message}") from error
        state = PullState(name.display, sum(size for _, size, _ in layers))
        self._pulls[name.display] = state
        digests = {digest for digest, _, _ in layers}
        self.store.pin(digests)
        try:
            await asyncio.to_thread(self._check_disk, name, layers)
            for digest, size, _media in layers:
                status = f"pulling {digest.removeprefix('sha256:')[:12]}"
                if self.store.has_blob(digest):
                    have = self.store.blob_path(digest).stat().st_size
                    state.done += size
                    yield {"status": status, "digest": digest, "total": have, "completed": have}
                    continue
                async for completed in self._download(session, digest, size):
                    state.current = completed
                    self._publish(state)
                    chunk = {"status": status, "digest": digest, "total": size}
                    yield {**chunk, "completed": completed} if completed else chunk
                state.done += size
                state.current = 0
            yield {"status": "verifying sha256 digest"}  # each blob was verified before commit
            yield {"status": "writing manifest"}
            removed = await asyncio.to_thread(self.store.install_manifest, name, data)
            if removed:
                yield {"status": "removing unused layers"}
            self.publish(state.event("success"))
            yield {"status": "success"}
        except HanaError as error:
            self.publish(state.event("error", error=error.message))
            raise
        except BaseException:
            self.publish(state.event("error", error="pull canceled"))
            raise
        finally:
            self.store.unpin(digests)
            if self._pulls.get(name.display) is state:
                del self._pulls[name.display]

    def _publish(self, state: PullState) -> None:
        now = time.monotonic()
        if now - state.published >= PUBLISH_SECONDS:
            state.published = now
            self.publish(state.event("pulling"))

    def _check_disk(self, name: ModelName, layers: list[tuple[str, int, str]]) -> None:
        """Refuse a pull that cannot fit, before any byte is fetched."""
        missing = [(d, s) for d, s, _ in layers if not self.store.has_blob(d)]
        need = sum(s for _, s in missing) - sum(
            partial_progress(self.store.blobs, d) for d, _ in missing
        )
        self.store.blobs_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.store.blobs_dir).free
        if need > free:
            raise HanaError(
                f"not enough disk space to pull {name.display}: it needs {human_size(need)}, "
                f"{self.store.blobs_dir} has {human_size(free)} free"
            )

    async def _download(
        self, session: RegistrySession, digest: str, size: int
    ) -> AsyncIterator[int]:
        """Bytes completed of `digest` every tick, sharing the transfer with other pulls."""
        shared = self._downloads.get(digest)
        if shared is not None and shared.abandoned:
            # Cancelled by its last waiter and still saving its state: let it finish, then resume.
            await asyncio.wait({shared.task})
            shared = self._downloads.get(digest)
        if shared is None:
            download = BlobDownload(self.store.blobs, digest, size, self.min_part)
            task = asyncio.create_task(
                download.run(self.client, lambda: session.blob_source(digest))
            )
            shared = _Shared(download, task)
            self._downloads[digest] = shared
            task.add_done_callback(lambda _t, d=digest, s=shared: self._forget(d, s))
        shared.waiters += 1
        try:
            last = -1
            while True:
                done, _ = await asyncio.wait({shared.task}, timeout=TICK_SECONDS)
                if shared.download.completed != last:
                    last = shared.download.completed
                    yield last
                if done:
                    break
            shared.task.result()
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                log.info("pull of %s canceled: keeping the partial download", digest)
                shared.abandoned = True
                shared.task.cancel()

    def _forget(self, digest: str, shared: _Shared) -> None:
        if self._downloads.get(digest) is shared:
            del self._downloads[digest]
        if not shared.task.cancelled() and shared.task.exception() is not None:
            log.debug("download of %s failed: %s", digest, shared.task.exception())


def parse_layers(data: bytes) -> list[tuple[str, int, str]]:
    """(digest, size, media type) of each layer, then the config, each digest once."""
    try:
        manifest = json.loads(data)
        entries = [*manifest.get("layers", []), manifest["config"]]
        layers: list[tuple[str, int, str]] = []
        for entry in entries:
            if not entry.get("digest"):
                continue
            digest = parse_digest(entry["digest"])
            if entry.get("mediaType") == MEDIA_TENSOR:
                raise HanaError(
                    "this model requires MLX support, but the MLX runtime is not available"
                )
            if digest not in {d for d, _, _ in layers}:
                layers.append((digest, int(entry.get("size", 0)), entry.get("mediaType", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise HanaError(f"invalid manifest: {error}") from error
    return layers
