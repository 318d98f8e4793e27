"""Creating a remote model as Ollama does: no weights layer, the Modelfile's small layers
(template, system, parameters, messages, license) and a config blob with the remote fields and the
`info` the request gives (capabilities, family, sizes)."""

from __future__ import annotations

from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_server.remote.spec import RemoteSpec
from hana_server.store.blobs import Progress
from hana_server.store.create import LayerList, ModelChanges, _go_platform
from hana_server.store.manifests import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MANIFEST,
    MEDIA_MESSAGES,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    canonical_json,
)
from hana_server.store.model import Model
from hana_server.store.store import ModelStore

# Create `info` keys Ollama copies into a remote model's config.
INFO_KEYS = {
    "capabilities": list,
    "model_family": str,
    "base_name": str,
    "parameter_size": str,
    "quantization_level": str,
    "context_length": int,
    "embedding_length": int,
}


def remote_config(spec: RemoteSpec, info: dict[str, Any] | None) -> dict[str, Any]:
    """The config blob: remote fields, details from `info`, and the fields a derived model needs
    (so `FROM <remote model>` copies them instead of looking for weights)."""
    info = info or {}
    for key, value in info.items():
        kind = INFO_KEYS.get(key)
        if kind is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidRequest(f"invalid info.{key}")
    capabilities = info.get("capabilities") or ["completion"]
    if not all(isinstance(c, str) for c in capabilities):
        raise InvalidRequest("invalid info.capabilities")
    family = info.get("model_family", "")
    arch, os_name = _go_platform()
    config: dict[str, Any] = {
        **spec.config_fields(),
        "model_format": "",
        "model_family": family,
        "model_families": [family] if family else None,
        "model_type": info.get("parameter_size", ""),
        "file_type": info.get("quantization_level", ""),
        "capabilities": list(capabilities),
        "architecture": arch,
        "os": os_name,
    }
    for key in ("base_name", "context_length", "embedding_length"):
        if key in info:
            config[key] = info[key]
    return config


def create_remote(
    store: ModelStore,
    name: str,
    spec: RemoteSpec,
    changes: ModelChanges,
    info: dict[str, Any] | None,
    report: Progress,
) -> Model:
    """Write the layers, the config blob and the manifest of a remote model (under the
    store's lock, as `ModelStore.create`, so no sweep sees the new blobs unreferenced)."""
    with store._lock:
        return _create_remote(store, name, spec, changes, info, report)


def _create_remote(
    store: ModelStore,
    name: str,
    spec: RemoteSpec,
    changes: ModelChanges,
    info: dict[str, Any] | None,
    report: Progress,
) -> Model:
    layers = LayerList(store.blobs, [])
    if changes.template:
        layers.replace(MEDIA_TEMPLATE, changes.template.encode())
    if changes.system:
        layers.replace(MEDIA_SYSTEM, changes.system.encode())
    if changes.parameters:
        layers.replace(MEDIA_PARAMS, canonical_json(changes.parameters))
    if changes.messages:
        layers.replace(MEDIA_MESSAGES, canonical_json(changes.messages))
    for text in changes.license or []:
        layers.add_once(MEDIA_LICENSE, text.encode())
    config = remote_config(spec, info)
    config["rootfs"] = {"type": "layers", "diff_ids": [la["digest"] for la in layers.layers]}
    config_layer = layers.blob_layer(MEDIA_CONFIG, canonical_json(config))
    for layer in [*layers.layers, config_layer]:
        verb = "creating new" if layer["digest"] in layers.created else "using existing"
        report(f"{verb} layer {layer['digest']}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_layer,
        "layers": layers.layers,
    }
    report("writing manifest")
    model = store.write_manifest(name, manifest)
    report("success")
    return model
