"""Manifests in Ollama's layout: found by name in any letter case, read into a `Model`, written
atomically.

    manifests/<host>/<namespace>/<model>/<tag>   JSON manifest (docker manifest v2 shape)

A manifest names its config blob and its layers (GGUF weights, template, system, params, ...) by
digest; the blobs themselves live in the `BlobStore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hana_protocol.errors import HanaError, InvalidRequest, ModelNotFound
from hana_server.store.blobs import BlobStore, parse_digest, replace_file
from hana_server.store.model import Model
from hana_server.store.names import ModelName

log = logging.getLogger("hana.store")

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
# The model_path of a remote model, which has no weights layer: reading it as a GGUF fails.
NO_WEIGHTS = Path(os.devnull)
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # older name of the template layer
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"


def canonical_json(value: Any) -> bytes:
    # Compact, like Go's json.Marshal, so the bytes (and digests) are stable.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def as_name(name: str | ModelName) -> ModelName:
    return name if isinstance(name, ModelName) else ModelName.parse(name)


def manifest_digests(path: Path) -> set[str] | None:
    """Every blob the manifest at `path` refers to; None (logged) if it cannot be read."""
    try:
        manifest = json.loads(path.read_bytes())
        layers = [manifest["config"], *manifest["layers"]]
        return {parse_digest(layer["digest"]) for layer in layers}
    except (OSError, ValueError, KeyError, TypeError, InvalidRequest) as e:
        log.warning("cannot read manifest %s: %s", path, e)
        return None


class ManifestTree:
    """The manifests/ directory: four levels (host/namespace/model/tag) of JSON files."""

    def __init__(self, directory: Path, blobs: BlobStore) -> None:
        self.directory = Path(directory)
        self.blobs = blobs

    def paths(self, name: ModelName | None = None) -> list[Path]:
        """Files exactly four levels under manifests/ (host/namespace/model/tag); with `name`,
        only those that spell it, in any letter case."""
        level = [self.directory]
        for depth in range(4):
            want = name.parts[depth].lower() if name else None
            found: list[Path] = []
            for directory in level:
                try:
                    entries = list(os.scandir(directory))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                found += [
                    Path(e.path)
                    for e in entries
                    if (want is None or e.name.lower() == want)
                    and (e.is_file() if depth == 3 else e.is_dir())
                ]
            level = found
        return sorted(level)

    def find(self, name: ModelName) -> tuple[ModelName, Path] | None:
        """The manifest for `name`, matched case-insensitively, with the stored spelling."""
        paths = self.paths(name)
        if not paths:
            return None
        return ModelName(*paths[0].relative_to(self.directory).parts), paths[0]

    def existing(self, name: str | ModelName) -> tuple[ModelName, Path]:
        """Like `find`, but a missing model is ModelNotFound."""
        found = self.find(as_name(name))
        if found is None:
            raise ModelNotFound(str(name))
        return found

    def target(self, name: str | ModelName) -> tuple[ModelName, Path]:
        """Where a write to `name` goes: the model's manifest if it exists in any letter case
        (Ollama keeps the stored spelling), else a new path."""
        name = as_name(name)
        return self.find(name) or (name, self.directory / name.manifest_relpath)

    def name_of(self, path: Path) -> ModelName | None:
        """The model a manifest path spells; None if it is not a valid model name."""
        host, namespace, model, tag = path.relative_to(self.directory).parts
        try:
            return ModelName.parse(f"{host}/{namespace}/{model}:{tag}")
        except InvalidRequest:
            return None

    def read(self, name: ModelName, path: Path) -> Model:
        """The model the manifest at `path` describes, with its small layers read in."""
        data = path.read_bytes()
        manifest = json.loads(data)
        config: dict[str, Any] = {}
        if manifest.get("config", {}).get("digest"):
            config = json.loads(self._read_blob(name, manifest["config"]["digest"]))
        size = int(manifest.get("config", {}).get("size", 0))
        model_path: Path | None = None
        found: dict[str, Any] = {"license": []}
        parent = ""
        for layer in manifest.get("layers", []):
            size += int(layer.get("size", 0))
            media, digest = layer.get("mediaType"), layer.get("digest", "")
            if media == MEDIA_MODEL:
                model_path = self.blobs.path(digest)
                parent = layer.get("from", "")
            elif media in (MEDIA_TEMPLATE, MEDIA_PROMPT):
                found["template"] = self._read_blob(name, digest).decode()
            elif media == MEDIA_SYSTEM:
                found["system"] = self._read_blob(name, digest).decode()
            elif media == MEDIA_PARAMS:
                found["parameters"] = json.loads(self._read_blob(name, digest))
            elif media == MEDIA_MESSAGES:
                found["messages"] = json.loads(self._read_blob(name, digest))
            elif media == MEDIA_LICENSE:
                found["license"].append(self._read_blob(name, digest).decode())
        if model_path is None and config.get("remote_host"):
            model_path = NO_WEIGHTS  # a remote model (hana_server.remote): served elsewhere
        elif model_path is None:
            raise HanaError(f"model '{name.display}' has no GGUF weights layer")
        elif not model_path.is_file():
            raise HanaError(f"model '{name.display}' is damaged: blob {model_path.name} is missing")
        return Model(
            name=name,
            digest=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
            size=size,
            model_path=model_path,
            config=config,
            parent_model=parent,
            manifest=manifest,
            **found,
        )

    def write(self, path: Path, data: bytes) -> None:
        """Put manifest bytes at `path` atomically; the blobs they name must be on disk."""
        replace_file(path, data)

    def remove(self, path: Path) -> None:
        """Delete a manifest and the directories it leaves empty."""
        path.unlink()
        for directory in path.relative_to(self.directory).parents[:-1]:
            try:
                (self.directory / directory).rmdir()
            except OSError:
                break  # not empty: another tag or model lives there

    def remove_empty_directories(self) -> None:
        """Remove directories under manifests/ that hold no manifest any more."""
        for root, _dirs, _files in sorted(os.walk(self.directory), reverse=True):
            if Path(root) != self.directory:
                with contextlib.suppress(OSError):  # not empty, or not ours
                    Path(root).rmdir()

    def _read_blob(self, name: ModelName, digest: str) -> bytes:
        try:
            return self.blobs.path(digest).read_bytes()
        except FileNotFoundError:
            raise HanaError(
                f"model '{name.display}' is damaged: blob {digest} is missing"
            ) from None
