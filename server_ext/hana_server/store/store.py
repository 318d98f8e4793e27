"""`ModelStore`: the model store's one entry point, over blobs and manifests in Ollama's layout.

    root/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest   (store/manifests.py)
    root/blobs/sha256-<hex>                           GGUF weights, config, template, params, ...
                                                                      (store/blobs.py)

An existing Ollama models directory works as it is. Writes are atomic (temp file + rename, digest
checked), so readers never see a partial blob or manifest; one lock orders the changes to
manifests, so a delete's blob sweep never races a create. Building a new model's layers lives in
store/create.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hana_protocol.errors import HanaError, InvalidRequest
from hana_protocol.modelfile import Modelfile, plan_create
from hana_server.store.blobs import BlobStore, Progress, parse_digest
from hana_server.store.create import (
    ModelChanges,
    build_manifest,
    checked_parameters,
    origin_from_gguf,
    origin_from_model,
)
from hana_server.store.gguf_info import is_gguf
from hana_server.store.manifests import ManifestTree, as_name, canonical_json, manifest_digests
from hana_server.store.model import Model
from hana_server.store.names import ModelName

log = logging.getLogger("hana.store")


class ModelStore:
    """Manifests and blobs under `root`, in Ollama's layout. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        self.blobs = BlobStore(self.blobs_dir)
        self.manifests = ManifestTree(self.manifests_dir, self.blobs)
        # Serialises changes to manifests, so a delete's blob sweep never races a create.
        self._lock = threading.RLock()
        # Blobs an unfinished pull will name: no sweep removes them (store/pull.py).
        self._pinned: Counter[str] = Counter()
        self.blobs.remove_stale_temp_files()

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def temp_path(self) -> Path:
        """A fresh temp path in blobs/, for a file that `adopt_blob` renames into place."""
        return self.blobs.temp_path()

    def write_blob(self, digest: str, chunks: Iterable[bytes]) -> bool:
        """Store `chunks` as blob `digest` (verified, atomic); False if it already existed."""
        return self.blobs.write(digest, chunks)

    def adopt_blob(self, path: Path, digest: str) -> bool:
        """Move `path`, whose sha256 the caller has computed, into blobs as `digest`."""
        return self.blobs.adopt(path, digest)

    def import_file(self, path: Path, progress: Progress | None = None) -> str:
        """Copy the file at `path` into blobs; returns `sha256:<hex>`."""
        return self.blobs.import_file(path, progress)

    # ------------------------------------------------------------------ models

    def get(self, name: str | ModelName) -> Model:
        """The model called `name` (any letter case); ModelNotFound if there is none."""
        return self.manifests.read(*self.manifests.existing(name))

    def list(self) -> list[Model]:
        """Every readable model, newest first; damaged ones are logged and left out."""
        models = []
        for path in self.manifests.paths():
            name = self.manifests.name_of(path)
            if name is None:
                log.debug("skipping %s: not a valid model name", path)
                continue
            try:
                models.append(self.manifests.read(name, path))
            except (HanaError, OSError, ValueError, KeyError, TypeError) as e:
                log.warning("skipping model %s: %s", name.display, e)
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return models

    def write_manifest(self, name: str | ModelName, manifest: dict[str, Any]) -> Model:
        """Install `manifest` under `name` (an existing spelling of the name is kept);
        every blob it names must already be in the store."""
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        for digest in digests:
            if not self.blobs.has(digest):
                raise InvalidRequest(f"blob {parse_digest(digest)} not found")
        with self._lock:
            name, path = self.manifests.target(name)
            # The blobs' renames must be on disk before a manifest can point at them.
            self.blobs.sync()
            self.manifests.write(path, canonical_json(manifest))
            return self.manifests.read(name, path)

    def install_manifest(self, name: str | ModelName, data: bytes) -> bool:
        """Install a pulled manifest's bytes verbatim under `name` (Ollama keeps the registry's
        bytes, so the digest matches the registry's); every blob it names must be in the store.
        Blobs only the old version of `name` used are removed: True if there were any."""
        manifest = json.loads(data)
        digests = {parse_digest(la["digest"]) for la in [manifest["config"], *manifest["layers"]]}
        for digest in digests:
            if not self.blobs.has(digest):
                raise InvalidRequest(f"blob {digest} not found")
        with self._lock:
            name, path = self.manifests.target(name)
            old = (manifest_digests(path) or set()) if path.is_file() else set()
            self.blobs.sync()
            self.manifests.write(path, data)
            return self._sweep(old - digests)

    def pin(self, digests: Iterable[str]) -> None:
        """Keep these blobs through sweeps until `unpin` (a pull will name them)."""
        with self._lock:
            self._pinned.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pinned.subtract(digests)
            self._pinned += Counter()  # drop zero counts

    def _sweep(self, candidates: set[str]) -> bool:
        """Remove those of `candidates` that no manifest and no pull in progress refers to."""
        unused = {d for d in candidates if not self._pinned[d]}
        for other in self.manifests.paths() if unused else []:
            used = manifest_digests(other)
            if used is None:
                # A manifest that cannot be read may name any blob: keep them all (as Ollama).
                return False
            unused -= used
        self.blobs.remove(unused)
        return bool(unused)

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
        name = as_name(name)
        report = progress or (lambda _status: None)
        if (model_digest is None) == (from_model is None):
            raise InvalidRequest("create needs exactly one of a GGUF blob or a model to start from")
        changes = ModelChanges(
            template=template,
            system=system,
            parameters=checked_parameters(parameters or {}),
            messages=messages,
            license=license,
            requires=requires,
        )
        with self._lock:
            if model_digest is not None:
                origin = origin_from_gguf(self.blobs, model_digest, report)
            else:
                origin = origin_from_model(self.get(str(from_model)), report)
            manifest = build_manifest(self.blobs, origin, changes, report)
            report("writing manifest")
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
                    f"FROM {modelfile.from_}: {plan.model_file} is not a GGUF file; FROM takes a "
                    ".gguf model file or the name of an installed model"
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
            _, src_path = self.manifests.existing(src)
            dst_name, path = self.manifests.target(dst)
            if path != src_path:
                self.manifests.write(path, src_path.read_bytes())
            return self.manifests.read(dst_name, path)

    def delete(self, name: str | ModelName) -> None:
        """Remove the manifest, then the blobs no other manifest refers to."""
        with self._lock:
            _, path = self.manifests.existing(name)
            unused = manifest_digests(path) or set()
            self.manifests.remove(path)
            self._sweep(unused)
