"""The model store: manifests and content-addressed blobs in Ollama's on-disk layout.

    root/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest (docker manifest v2 shape)
    root/blobs/sha256-<hex>                           GGUF weights, config, template, params, ...

An existing Ollama models directory works as it is. Every write goes to a temp file first and is
renamed into place after its digest is checked, so readers never see a partial blob or manifest.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hana_protocol.digests import sha256_file
from hana_protocol.errors import HanaError, InvalidRequest, ModelNotFound
from hana_protocol.modelfile import Modelfile, plan_create
from hana_protocol.options import KNOWN_OPTIONS, check_option
from hana_server.store.gguf_info import GGUFInfo, is_gguf
from hana_server.store.names import ModelName

log = logging.getLogger("hana.store")

Progress = Callable[[str], None]

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # older name of the template layer
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"

DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
TEMP_PREFIX = ".tmp-"
# A temp file this old belongs to a writer that died; younger ones may still be in use.
STALE_TEMP_SECONDS = 24 * 3600
# Capabilities that come from the weights; the others come from the prompt template.
WEIGHT_CAPABILITIES = ("completion", "embedding", "vision")
CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """`sha256:<hex>` or `sha256-<hex>` -> canonical `sha256:<lowercase hex>`."""
    match = DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidRequest(f"invalid digest format: {digest!r}")
    return "sha256:" + match.group(1).lower()


def template_capabilities(template: str | None, chat_template: str | None = None) -> list[str]:
    """What a prompt template lets a model do: a Go template's `.Tools`, `.Suffix`, `.Think`
    variables, or (without one) a GGUF Jinja template that reads `tools`."""
    if template is None:
        return ["tools"] if chat_template and re.search(r"\btools\b", chat_template) else []
    found = []
    for var, capability in (("Tools", "tools"), ("Suffix", "insert"), ("Think", "thinking")):
        if re.search(rf"\.{var}\b", template):
            found.append(capability)
    return found


def weight_capabilities(info: GGUFInfo) -> list[str]:
    # Ollama's rule: a pooling type makes an embedding model, anything else completes text.
    return ["embedding"] if info.pooling_type is not None else ["completion"]


@functools.lru_cache(maxsize=256)
def _weight_capabilities_of(path: Path, mtime_ns: int) -> tuple[str, ...]:
    return tuple(weight_capabilities(GGUFInfo.read(path)))


def _go_platform() -> tuple[str, str]:
    """(architecture, os) spelled as Go's GOARCH/GOOS, which the config blob records."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return arch, {"win32": "windows"}.get(sys.platform, sys.platform)


def _dumps(value: Any) -> bytes:
    # Compact, like Go's json.Marshal, so the bytes (and digests) are stable.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (renames), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Model:
    """One installed model, as its manifest and small layers describe it."""

    name: ModelName
    digest: str  # sha256 hex of the manifest bytes, as /api/tags shows it
    modified_at: datetime
    size: int
    model_path: Path
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    parent_model: str = ""
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def details(self) -> dict[str, Any]:
        """Ollama's ModelDetails."""
        c = self.config
        details: dict[str, Any] = {
            "parent_model": self.parent_model,
            "format": c.get("model_format") or "gguf",
            "family": c.get("model_family", ""),
            "families": c.get("model_families"),
            "parameter_size": c.get("model_type", ""),
            "quantization_level": c.get("file_type", ""),
        }
        for key in ("context_length", "embedding_length"):
            if c.get(key):
                details[key] = c[key]
        return details

    @property
    def capabilities(self) -> list[str]:
        """What the model can do: "completion" or "embedding", plus what its template offers
        ("tools", "insert", "thinking")."""
        stored = self.config.get("capabilities")
        if isinstance(stored, list):
            return list(stored)
        # Written by Ollama, whose config does not record them: derive them the way it does.
        try:
            mtime_ns = self.model_path.stat().st_mtime_ns
            weights = list(_weight_capabilities_of(self.model_path, mtime_ns))
        except (OSError, InvalidRequest):
            weights = ["completion"]
        return weights + template_capabilities(self.template)


class ModelStore:
    """Manifests and blobs under `root`, in Ollama's layout. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        # Serialises changes to manifests, so a delete's blob sweep never races a create.
        self._lock = threading.RLock()
        self._remove_stale_temp_files()

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / parse_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def temp_path(self, directory: Path | None = None) -> Path:
        """A fresh, not yet existing temp path in `directory` (default blobs/), for a file that
        will be renamed into place."""
        directory = directory or self.blobs_dir
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"

    def write_blob(self, digest: str, chunks: Iterable[bytes]) -> bool:
        """Store `chunks` as blob `digest`; False (chunks unread) if it already exists.
        Raises InvalidRequest on a digest mismatch, leaving nothing behind."""
        digest = parse_digest(digest)
        if self.has_blob(digest):
            return False
        tmp, actual = self._write_temp(chunks)
        if actual != digest:
            tmp.unlink(missing_ok=True)
            raise InvalidRequest(f"digest mismatch, expected {digest}, got {actual}")
        return self._commit(tmp, digest)

    def adopt_blob(self, path: Path, digest: str) -> bool:
        """Move `path`, whose sha256 the caller has computed, into blobs as `digest`.
        False if the blob already existed; then `path` is left where it is."""
        digest = parse_digest(digest)
        if self.has_blob(digest):
            return False
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        _fsync(path)
        os.chmod(path, 0o644)
        os.replace(path, self.blob_path(digest))
        return True

    def import_file(self, path: Path, progress: Progress | None = None) -> str:
        """Copy the file at `path` into blobs (hashing while copying); returns `sha256:<hex>`."""
        path = Path(path)
        size = path.stat().st_size
        # Hash before copying only if a blob of the same size exists: re-creating a model from
        # the same GGUF then costs one read instead of a multi-GB write that is thrown away.
        if self._blob_of_size_exists(size):
            digest = "sha256:" + sha256_file(path)
            if self.has_blob(digest):
                return digest
        if progress:
            progress(f"copying file {path.name}")
        with path.open("rb") as f:
            tmp, digest = self._write_temp(iter(functools.partial(f.read, CHUNK), b""))
        self._commit(tmp, digest)
        return digest

    def _write_temp(
        self, chunks: Iterable[bytes], directory: Path | None = None
    ) -> tuple[Path, str]:
        """Write `chunks` to a synced temp file; returns it and the sha256 digest of its bytes."""
        tmp = self.temp_path(directory)
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

    def _commit(self, tmp: Path, digest: str) -> bool:
        target = self.blob_path(digest)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, target)
        return True

    def _write_bytes_blob(self, data: bytes) -> tuple[str, bool]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return digest, self.write_blob(digest, [data])

    def _blob_of_size_exists(self, size: int) -> bool:
        try:
            entries = list(os.scandir(self.blobs_dir))
        except FileNotFoundError:
            return False
        return any(e.name.startswith("sha256-") and e.stat().st_size == size for e in entries)

    def _remove_stale_temp_files(self) -> None:
        try:
            entries = list(os.scandir(self.blobs_dir))
        except FileNotFoundError:
            return
        cutoff = time.time() - STALE_TEMP_SECONDS
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                log.info("removing stale temp file %s", entry.path)
                Path(entry.path).unlink(missing_ok=True)

    # ------------------------------------------------------------------ manifests

    def _manifest_paths(self, name: ModelName | None = None) -> list[Path]:
        """Files exactly four levels under manifests/ (host/namespace/model/tag); with `name`,
        only those that spell it, in any letter case."""
        level = [self.manifests_dir]
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

    def _find(self, name: ModelName) -> tuple[ModelName, Path] | None:
        """The manifest for `name`, matched case-insensitively, with the stored spelling."""
        paths = self._manifest_paths(name)
        if not paths:
            return None
        return ModelName(*paths[0].relative_to(self.manifests_dir).parts), paths[0]

    def _existing(self, name: str | ModelName) -> tuple[ModelName, Path]:
        found = self._find(_as_name(name))
        if found is None:
            raise ModelNotFound(str(name))
        return found

    def _target(self, name: str | ModelName) -> tuple[ModelName, Path]:
        """Where a write to `name` goes: the model's manifest if it exists in any letter case
        (Ollama keeps the stored spelling), else a new path."""
        name = _as_name(name)
        return self._find(name) or (name, self.manifests_dir / name.manifest_relpath)

    def _name_from_path(self, path: Path) -> ModelName | None:
        host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
        try:
            return ModelName.parse(f"{host}/{namespace}/{model}:{tag}")
        except InvalidRequest:
            return None

    def _load(self, name: ModelName, path: Path) -> Model:
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
                model_path = self.blob_path(digest)
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
        if model_path is None:
            raise HanaError(f"model '{name.display}' has no GGUF weights layer")
        if not model_path.is_file():
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

    def _read_blob(self, name: ModelName, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise HanaError(
                f"model '{name.display}' is damaged: blob {digest} is missing"
            ) from None

    def _write_file(self, target: Path, data: bytes) -> None:
        """Write `data` to `target` through a temp file in the same directory and a rename."""
        tmp, _ = self._write_temp([data], target.parent)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(target.parent)

    def write_manifest(self, name: str | ModelName, manifest: dict[str, Any]) -> Model:
        """Install `manifest` under `name` (an existing spelling of the name is kept);
        every blob it names must already be in the store."""
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        for digest in digests:
            if not self.has_blob(digest):
                raise InvalidRequest(f"blob {parse_digest(digest)} not found")
        with self._lock:
            name, path = self._target(name)
            # The blobs' renames must be on disk before a manifest can point at them.
            _fsync(self.blobs_dir)
            self._write_file(path, _dumps(manifest))
            return self._load(name, path)

    # ------------------------------------------------------------------ models

    def get(self, name: str | ModelName) -> Model:
        """The model called `name` (any letter case); ModelNotFound if there is none."""
        return self._load(*self._existing(name))

    def list(self) -> list[Model]:
        """Every readable model, newest first; damaged ones are logged and left out."""
        models = []
        for path in self._manifest_paths():
            name = self._name_from_path(path)
            if name is None:
                log.debug("skipping %s: not a valid model name", path)
                continue
            try:
                models.append(self._load(name, path))
            except (HanaError, OSError, ValueError, KeyError, TypeError) as e:
                log.warning("skipping model %s: %s", name.display, e)
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return models

    def create(
        self,
        name: str | ModelName,
        *,
        model_digest: str | None = None,
        from_model: str | None = None,
        template: str | None = None,
        system: str | None = None,
        parameters: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
        license: list[str] | None = None,
        requires: str | None = None,
        progress: Progress | None = None,
    ) -> Model:
        """Create `name` from a GGUF blob (`model_digest`) or another model (`from_model`),
        replacing its template/system/messages, merging parameters and adding licenses.
        Empty values change nothing, as in Ollama."""
        name = _as_name(name)
        report = progress or (lambda _status: None)
        if (model_digest is None) == (from_model is None):
            raise InvalidRequest("create needs exactly one of a GGUF blob or a model to start from")
        params = _checked_parameters(parameters or {})

        with self._lock:
            chat_template: str | None = None
            if model_digest is not None:
                digest = parse_digest(model_digest)
                if not self.has_blob(digest):
                    raise InvalidRequest(f"blob {digest} not found")
                report("parsing GGUF")
                info = GGUFInfo.read(self.blob_path(digest))
                layers = [{"mediaType": MEDIA_MODEL, "digest": digest, "size": info.file_size}]
                config = _config_from_gguf(info)
                chat_template = info.chat_template
                inherited_template = None
                base_params: dict[str, Any] = {}
            else:
                base = self.get(str(from_model))
                layers = [{**layer, "from": base.name.display} for layer in base.manifest["layers"]]
                config = copy.deepcopy(base.config)
                if not all(k in config for k in ("model_type", "file_type", "capabilities")):
                    report("parsing GGUF")
                    config.update(_config_from_gguf(GGUFInfo.read(base.model_path)))
                inherited_template = base.template
                base_params = base.parameters

            created: set[str] = set()

            def layer_of(media: str, data: bytes) -> dict[str, Any]:
                digest, is_new = self._write_bytes_blob(data)
                if is_new:
                    created.add(digest)
                return {"mediaType": media, "digest": digest, "size": len(data)}

            def put(media: str, data: bytes, *replaced: str) -> None:
                nonlocal layers
                layers = [la for la in layers if la["mediaType"] not in (media, *replaced)]
                layers.append(layer_of(media, data))

            if template:
                put(MEDIA_TEMPLATE, template.encode(), MEDIA_PROMPT)
            if system:
                put(MEDIA_SYSTEM, system.encode())
            if params:
                put(MEDIA_PARAMS, _dumps({**base_params, **params}))
            if messages:
                put(MEDIA_MESSAGES, _dumps(messages))
            for text in license or []:
                layer = layer_of(MEDIA_LICENSE, text.encode())
                if all(la["digest"] != layer["digest"] for la in layers):
                    layers.append(layer)

            final_template = template or inherited_template
            if final_template is not None or model_digest is not None:
                weights = [c for c in config["capabilities"] if c in WEIGHT_CAPABILITIES]
                config["capabilities"] = weights + template_capabilities(
                    final_template, chat_template
                )
            if requires:
                config["requires"] = requires
            config["rootfs"] = {"type": "layers", "diff_ids": [la["digest"] for la in layers]}
            config_layer = layer_of(MEDIA_CONFIG, _dumps(config))

            # Reported in manifest order once all layers exist, the way Ollama prints them.
            for layer in [*layers, config_layer]:
                verb = "creating new" if layer["digest"] in created else "using existing"
                report(f"{verb} layer {layer['digest']}")
            report("writing manifest")
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config_layer,
                "layers": layers,
            }
            model = self.write_manifest(name, manifest)
        report("success")
        return model

    def create_from_modelfile(
        self,
        name: str | ModelName,
        text: str,
        base_dir: Path,
        progress: Progress | None = None,
    ) -> Model:
        """Create `name` from Modelfile `text`; a relative FROM path is taken from `base_dir`."""
        modelfile = Modelfile.parse(text)
        plan = plan_create(modelfile, Path(base_dir))
        fields = dict(plan.fields)
        model_digest = None
        if plan.model_file is not None:
            if not is_gguf(plan.model_file):
                raise InvalidRequest(
                    f"FROM {modelfile.from_}: {plan.model_file} is not a GGUF file; "
                    "FROM takes a .gguf model file or the name of an installed model"
                )
            if progress:
                progress("gathering model components")
            model_digest = self.import_file(plan.model_file, progress)
        return self.create(
            name,
            model_digest=model_digest,
            from_model=fields.pop("from", None),
            progress=progress,
            **fields,
        )

    def copy(self, src: str | ModelName, dst: str | ModelName) -> Model:
        """Make `dst` a second name for `src` (the same manifest bytes, so the same digest)."""
        with self._lock:
            _, src_path = self._existing(src)
            dst_name, path = self._target(dst)
            if path != src_path:
                self._write_file(path, src_path.read_bytes())
            return self._load(dst_name, path)

    def delete(self, name: str | ModelName) -> None:
        """Remove the manifest, then the blobs no other manifest refers to."""
        with self._lock:
            _, path = self._existing(name)
            digests = _manifest_digests(path)
            path.unlink()
            for directory in path.relative_to(self.manifests_dir).parents[:-1]:
                try:
                    (self.manifests_dir / directory).rmdir()
                except OSError:
                    break  # not empty: another tag or model lives there
            for other in self._manifest_paths():
                digests -= _manifest_digests(other)
            for digest in digests:
                log.debug("removing unused blob %s", digest)
                self.blob_path(digest).unlink(missing_ok=True)


def _as_name(name: str | ModelName) -> ModelName:
    return name if isinstance(name, ModelName) else ModelName.parse(name)


def _manifest_digests(path: Path) -> set[str]:
    try:
        manifest = json.loads(path.read_bytes())
        layers = [manifest["config"], *manifest["layers"]]
        return {parse_digest(layer["digest"]) for layer in layers}
    except (OSError, ValueError, KeyError, TypeError, InvalidRequest) as e:
        # An unreadable manifest keeps nothing alive, but it must not stop the sweep either.
        log.warning("cannot read manifest %s: %s", path, e)
        return set()


def _checked_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    checked = {}
    for key, value in parameters.items():
        if key not in KNOWN_OPTIONS:
            raise InvalidRequest(f"unknown parameter '{key}'")
        checked[key] = check_option(key, value)
    return checked


def _config_from_gguf(info: GGUFInfo) -> dict[str, Any]:
    arch, os_name = _go_platform()
    return {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "capabilities": weight_capabilities(info),
        "architecture": arch,
        "os": os_name,
    }
