"""Building a model from a create request: the layers it starts from (a GGUF blob or another
model), the layers the request replaces or adds, and the config blob, as a manifest to install.

Layer blobs are written as they are built; the manifest that makes them a model is written last
by the store, so a failed create leaves at most unreferenced blobs, never a half model.
"""

from __future__ import annotations

import copy
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_protocol.options import KNOWN_OPTIONS, check_option
from hana_server.store.blobs import BlobStore, Progress, parse_digest
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.manifests import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MANIFEST,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    canonical_json,
)
from hana_server.store.model import (
    WEIGHT_CAPABILITIES,
    Model,
    template_capabilities,
    weight_capabilities,
)

Layer = dict[str, Any]


@dataclass(frozen=True)
class ModelChanges:
    """What a create request sets on top of where it starts; empty values change nothing, as in
    Ollama. `parameters` are checked (`checked_parameters`) and merged over the base's."""

    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    license: list[str] | None = None
    requires: str | None = None


@dataclass
class Origin:
    """Where a new model starts: its weights layer (and, from a model, its other layers), the
    config so far, and what it inherits."""

    layers: list[Layer]
    config: dict[str, Any]
    from_gguf: bool
    chat_template: str | None = None  # the GGUF's Jinja template, for capabilities
    template: str | None = None  # inherited Go template
    parameters: dict[str, Any] = field(default_factory=dict)  # inherited parameters


def origin_from_gguf(blobs: BlobStore, model_digest: str, report: Progress) -> Origin:
    """Start from GGUF weights already in the store."""
    digest = parse_digest(model_digest)
    if not blobs.has(digest):
        raise InvalidRequest(f"blob {digest} not found")
    report("parsing GGUF")
    info = GGUFInfo.read(blobs.path(digest))
    return Origin(
        layers=[{"mediaType": MEDIA_MODEL, "digest": digest, "size": info.file_size}],
        config=config_from_gguf(info),
        from_gguf=True,
        chat_template=info.chat_template,
    )


def origin_from_model(base: Model, report: Progress) -> Origin:
    """Start from an installed model: every layer of it, marked as coming from it."""
    config = copy.deepcopy(base.config)
    if not all(k in config for k in ("model_type", "file_type", "capabilities")):
        # Written by Ollama, whose config lacks these: complete it from the weights.
        report("parsing GGUF")
        config.update(config_from_gguf(GGUFInfo.read(base.model_path)))
    return Origin(
        layers=[{**layer, "from": base.name.display} for layer in base.manifest["layers"]],
        config=config,
        from_gguf=False,
        template=base.template,
        parameters=base.parameters,
    )


class LayerList:
    """The layers of a manifest being built; each new layer's blob is written as it is added."""

    def __init__(self, blobs: BlobStore, layers: list[Layer]) -> None:
        self.blobs = blobs
        self.layers = list(layers)
        self.created: set[str] = set()  # digests of blobs this create wrote

    def blob_layer(self, media: str, data: bytes) -> Layer:
        digest, is_new = self.blobs.write_bytes(data)
        if is_new:
            self.created.add(digest)
        return {"mediaType": media, "digest": digest, "size": len(data)}

    def replace(self, media: str, data: bytes, *replaced: str) -> None:
        """Put a layer of kind `media` in place of every layer of that kind (and `replaced`)."""
        self.layers = [la for la in self.layers if la["mediaType"] not in (media, *replaced)]
        self.layers.append(self.blob_layer(media, data))

    def add_once(self, media: str, data: bytes) -> None:
        """Add a layer unless one with the same content is there already (licenses)."""
        layer = self.blob_layer(media, data)
        if all(la["digest"] != layer["digest"] for la in self.layers):
            self.layers.append(layer)


def build_manifest(
    blobs: BlobStore, origin: Origin, changes: ModelChanges, report: Progress
) -> dict[str, Any]:
    """Write the changed layers and the config blob; returns the manifest naming them."""
    layers = LayerList(blobs, origin.layers)
    if changes.template:
        layers.replace(MEDIA_TEMPLATE, changes.template.encode(), MEDIA_PROMPT)
    if changes.system:
        layers.replace(MEDIA_SYSTEM, changes.system.encode())
    if changes.parameters:
        layers.replace(MEDIA_PARAMS, canonical_json({**origin.parameters, **changes.parameters}))
    if changes.messages:
        layers.replace(MEDIA_MESSAGES, canonical_json(changes.messages))
    for text in changes.license or []:
        layers.add_once(MEDIA_LICENSE, text.encode())

    config = origin.config
    final_template = changes.template or origin.template
    if final_template is not None or origin.from_gguf:
        weights = [c for c in config["capabilities"] if c in WEIGHT_CAPABILITIES]
        config["capabilities"] = weights + template_capabilities(
            final_template, origin.chat_template, str(config.get("model_family") or "")
        )
    if changes.requires:
        config["requires"] = changes.requires
    config["rootfs"] = {"type": "layers", "diff_ids": [la["digest"] for la in layers.layers]}
    config_layer = layers.blob_layer(MEDIA_CONFIG, canonical_json(config))

    # Reported in manifest order once all layers exist, the way Ollama prints them.
    for layer in [*layers.layers, config_layer]:
        verb = "creating new" if layer["digest"] in layers.created else "using existing"
        report(f"{verb} layer {layer['digest']}")
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_layer,
        "layers": layers.layers,
    }


def checked_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Modelfile/create parameters checked against the option table; unknown names refused."""
    checked = {}
    for key, value in parameters.items():
        if key not in KNOWN_OPTIONS:
            raise InvalidRequest(f"unknown parameter '{key}'")
        checked[key] = check_option(key, value)
    return checked


def config_from_gguf(info: GGUFInfo) -> dict[str, Any]:
    """The config blob's fields that come from the weights (and the platform, as Ollama's do)."""
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


def _go_platform() -> tuple[str, str]:
    """(architecture, os) spelled as Go's GOARCH/GOOS, which the config blob records."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return arch, {"win32": "windows"}.get(sys.platform, sys.platform)
