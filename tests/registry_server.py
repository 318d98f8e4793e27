"""A model registry on loopback that speaks Ollama's registry protocol, for pull tests and benches.

Two real HTTP servers, as the real registry is built:

    registry R  http://127.0.0.1:P1   GET /v2/<ns>/<model>/manifests/<tag>
                                      HEAD/GET /v2/<ns>/<model>/blobs/sha256:<hex>  (GET: 307 to C)
                                      GET /v2/token?...   (anonymous bearer token)
    "CDN" C     http://127.0.0.2:P2   GET/HEAD /blobs/sha256/<hex>/data?X-Amz-... (Range: 206)

C sits on another hostname because Ollama compares hostnames without ports and the real registry
always redirects blobs to another host. hana reaches R through names like
`127.0.0.1:P1/library/tiny:latest` with `insecure: true`, exactly as Ollama allows.

Fault switches (thread-safe, set from the test): `require_token` (401 + WWW-Authenticate until a
token from /v2/token is sent), `redirect` (off: R serves blob bytes itself, like `registry:2`),
`drop_after[digest] = n` (close the connection after n body bytes, once), `corrupt` (flip one
byte of a blob as it is served), `hold(digest, n)` (stop after n bytes until `release()`).
`bytes_served[digest]` counts the body bytes sent; `requests` records each request.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.ollama.image."
CHUNK = 1 << 20

_MANIFEST_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/manifests/([^/]+)")
_BLOB_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/blobs/(sha256:[0-9a-f]{64})")
_CDN_PATH = re.compile(r"/blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})/data")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Blob:
    """One blob the registry serves: small ones in memory, big ones (a GGUF) from a file."""

    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> Blob:
        return cls("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)

    @classmethod
    def of_file(cls, path: Path) -> Blob:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return cls("sha256:" + h.hexdigest(), path.stat().st_size, path=path)

    def read(self, start: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[start : start + length]
        assert self.path is not None
        with self.path.open("rb") as f:
            return os.pread(f.fileno(), length, start)


@dataclass
class RegistryModel:
    """A model as the registry holds it: manifest bytes (served verbatim) and its blobs."""

    manifest: bytes
    blobs: list[Blob]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def layers(self) -> list[dict[str, Any]]:
        return json.loads(self.manifest)["layers"]

    def blob(self, media: str) -> Blob:
        """The blob of the first layer of type `media` (`model`, `template`, ...)."""
        digest = next(la["digest"] for la in self.layers if la["mediaType"] == LAYER + media)
        return next(b for b in self.blobs if b.digest == digest)


def build_model(
    gguf: Path,
    *,
    template: str | None = "{{ .Prompt }}",
    system: str | None = None,
    params: dict[str, Any] | None = None,
    license: str | None = None,
    messages: list[dict[str, str]] | None = None,
) -> RegistryModel:
    """A registry model around a GGUF file, with the text layers Ollama's library models carry."""
    weights = Blob.of_file(gguf)
    layers: list[tuple[str, Blob]] = [("model", weights)]
    texts: list[tuple[str, bytes | None]] = [
        ("template", template.encode() if template is not None else None),
        ("system", system.encode() if system is not None else None),
        ("params", json.dumps(params).encode() if params is not None else None),
        ("messages", json.dumps(messages).encode() if messages is not None else None),
        ("license", license.encode() if license is not None else None),
    ]
    layers += [(media, Blob.of_bytes(data)) for media, data in texts if data is not None]
    config = Blob.of_bytes(
        json.dumps(
            {
                "model_format": "gguf",
                "model_family": "llama",
                "model_families": ["llama"],
                "model_type": "tiny",
                "file_type": "F32",
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [b.digest for _, b in layers]},
            }
        ).encode()
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [
            {"mediaType": LAYER + media, "digest": b.digest, "size": b.size} for media, b in layers
        ],
    }
    # Indented on purpose: the registry's bytes are stored verbatim, so a client that re-serialises
    # the manifest shows up as a different digest.
    return RegistryModel(json.dumps(manifest, indent=3).encode(), [config, *(b for _, b in layers)])


@dataclass
class Faults:
    """Switches the test flips while the registry runs."""

    require_token: bool = True
    redirect: bool = True
    drop_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes, then close (once)
    hold_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes, then wait
    corrupt: set[str] = field(default_factory=set)  # digests served with one byte flipped


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class LoopbackRegistry:
    """Registry R and CDN C on loopback. Use as a context manager or call start()/stop()."""

    def __init__(self, cdn_host: str = "127.0.0.2") -> None:
        self.models: dict[tuple[str, str, str], RegistryModel] = {}
        self.blobs: dict[str, Blob] = {}
        self.faults = Faults()
        self.tokens: set[str] = set()
        self.bytes_served: defaultdict[str, int] = defaultdict(int)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._held = threading.Event()  # set when a hold fault is waiting
        self._release = threading.Event()
        self._drop_held = False
        self.cdn_host = cdn_host
        self.port = 0
        self.cdn_port = 0
        self._servers: list[_Server] = []

    # ------------------------------------------------------------------ setup

    @property
    def host(self) -> str:
        """`127.0.0.1:P1`: the host part of model names that point at this registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def name(self, model: str, tag: str = "latest", namespace: str = "library") -> str:
        """The hana/Ollama model name of a model here, e.g. `127.0.0.1:P1/library/tiny:latest`."""
        return f"{self.host}/{namespace}/{model}:{tag}"

    def add(
        self,
        model: str,
        registry_model: RegistryModel,
        *,
        tag: str = "latest",
        namespace: str = "library",
    ) -> RegistryModel:
        """Serve `registry_model` as `<namespace>/<model>:<tag>`."""
        with self.lock:
            self.models[(namespace, model, tag)] = registry_model
            for blob in registry_model.blobs:
                self.blobs[blob.digest] = blob
        return registry_model

    def start(self) -> LoopbackRegistry:
        """Bind (the same ports again after a stop, so names stay valid) and serve."""
        registry = self

        class Handler(_Handler):
            owner = registry

        self._servers = [
            _Server(("127.0.0.1", self.port), Handler),
            _Server((self.cdn_host, self.cdn_port), Handler),
        ]
        self.port = self._servers[0].server_address[1]
        self.cdn_port = self._servers[1].server_address[1]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True, name="registry").start()
        return self

    def stop(self) -> None:
        self.release()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> LoopbackRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls

    def hold(self, digest: str, after: int) -> None:
        """Stop every transfer of `digest` after `after` body bytes until `release()`."""
        with self.lock:
            self._held.clear()
            self._release.clear()
            self._drop_held = False
            self.faults.hold_after[digest] = after

    def wait_held(self, timeout: float = 30) -> bool:
        """Wait until a `hold_after` fault has stopped a blob mid-way."""
        return self._held.wait(timeout)

    def release(self, drop: bool = False) -> None:
        """Let held blob transfers go on, or with `drop` close their connections (the client
        that asked for them is gone, and their bytes must not count)."""
        with self.lock:
            self.faults.hold_after.clear()
            self._drop_held = drop
        self._release.set()

    def served(self, digest: str | None = None) -> int:
        """Body bytes of blobs sent so far: of one digest, or of all."""
        with self.lock:
            if digest is not None:
                return self.bytes_served[digest]
            return sum(self.bytes_served.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.bytes_served.clear()
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _route(self, body: bool) -> None:
        reg = self.owner
        path, _, query = self.path.partition("?")
        on_cdn = self.server.server_address[0] == reg.cdn_host  # type: ignore[index]
        with reg.lock:
            reg.requests.append(
                {
                    "method": self.command,
                    "server": "cdn" if on_cdn else "registry",
                    "path": path,
                    "range": self.headers.get("Range"),
                    "authorization": self.headers.get("Authorization"),
                    "user_agent": self.headers.get("User-Agent"),
                }
            )
        if on_cdn:
            match = _CDN_PATH.fullmatch(path)
            if match is None or "X-Amz-Signature" not in query:
                return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return self._blob(f"sha256:{match.group(1)}", body)
        if path == "/v2/token":
            token = secrets.token_hex(16)
            with reg.lock:
                reg.tokens.add(token)
            return self._reply(200, json.dumps({"token": token}).encode(), "application/json")
        manifest = _MANIFEST_PATH.fullmatch(path)
        blob = _BLOB_PATH.fullmatch(path)
        if manifest is None and blob is None:
            return self._reply(404, b"404 page not found\n", "text/plain")
        match = manifest or blob
        assert match is not None
        namespace, model = match.group(1), match.group(2)
        if reg.faults.require_token and not self._authorized():
            challenge = (
                f'Bearer realm="{reg.url}/v2/token",service="{reg.host}",'
                f'scope="repository:{namespace}/{model}:pull"'
            )
            return self._reply(
                401,
                b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                "application/json",
                {"WWW-Authenticate": challenge},
            )
        if manifest is not None:
            found = reg.models.get((namespace, model, manifest.group(3)))
            if found is None:
                return self._reply(
                    404,
                    b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                    "application/json",
                )
            headers = {"Docker-Content-Digest": found.digest}
            return self._reply(200, found.manifest, MEDIA_MANIFEST, headers, body=body)
        digest = blob.group(3)  # type: ignore[union-attr]
        if digest not in reg.blobs:
            return self._reply(
                404,
                b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}',
                "application/json",
            )
        if reg.faults.redirect:
            hexdigest = digest.removeprefix("sha256:")
            location = (
                f"http://{reg.cdn_host}:{reg.cdn_port}/blobs/sha256/{hexdigest[:2]}/{hexdigest}"
                f"/data?X-Amz-Expires=86400&X-Amz-Signature={secrets.token_hex(8)}"
            )
            return self._reply(307, b"", "text/plain", {"Location": location}, body=body)
        return self._blob(digest, body)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        with self.owner.lock:
            return auth.startswith("Bearer ") and auth[7:] in self.owner.tokens

    # ------------------------------------------------------------------ replies

    def _reply(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)

    def _blob(self, digest: str, body: bool) -> None:
        reg = self.owner
        blob = reg.blobs.get(digest)
        if blob is None:
            return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        start, end = 0, blob.size - 1
        status = 200
        header = self.headers.get("Range")
        if header:
            match = _RANGE.fullmatch(header.strip())
            if match is None or int(match.group(1)) >= blob.size:
                return self._reply(
                    416, b"", "text/plain", {"Content-Range": f"bytes */{blob.size}"}
                )
            start = int(match.group(1))
            end = min(int(match.group(2)), blob.size - 1) if match.group(2) else blob.size - 1
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{blob.size}")
        self.end_headers()
        if not body:
            return
        self.wfile.flush()
        self._send_body(blob, start, length)

    def _send_body(self, blob: Blob, start: int, length: int) -> None:
        reg = self.owner
        with reg.lock:
            faults = reg.faults
            drop = faults.drop_after.pop(blob.digest, None)
            hold = faults.hold_after.get(blob.digest)
            corrupt = blob.digest in faults.corrupt
        plain = drop is None and hold is None and not corrupt
        if plain and blob.path is not None:
            # The fast path (benchmarks): the kernel copies file pages to the socket.
            with blob.path.open("rb") as f:
                self._sendfile(blob.digest, f, start, length)
            return
        pos, stop = start, start + length
        while pos < stop:
            n = min(CHUNK, stop - pos)
            if drop is not None:
                if drop <= 0:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                n = min(n, drop)
                drop -= n
            if hold is not None and pos - start >= hold:
                reg._held.set()
                reg._release.wait()
                hold = None
                if reg._drop_held:
                    self.close_connection = True
                    return
            elif hold is not None:
                n = min(n, start + hold - pos)
            data = blob.read(pos, n)
            if corrupt and pos <= blob.size // 2 < pos + n:
                i = blob.size // 2 - pos
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
            try:
                self.wfile.write(data)
            except OSError:
                return
            self._count(blob.digest, len(data))
            pos += n

    def _sendfile(self, digest: str, f: Any, start: int, length: int) -> None:
        sock = self.connection
        offset, left = start, length
        while left > 0:
            try:
                sent = os.sendfile(sock.fileno(), f.fileno(), offset, min(left, 8 * CHUNK))
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            if sent == 0:
                return
            self._count(digest, sent)
            offset += sent
            left -= sent

    def _count(self, digest: str, n: int) -> None:
        with self.owner.lock:
            self.owner.bytes_served[digest] += n
