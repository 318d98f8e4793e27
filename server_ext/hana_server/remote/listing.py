"""How `/api/tags` and `/api/show` describe a remote model (Ollama's fields; no weights to read)."""

from __future__ import annotations

from typing import Any

from hana_server.remote.spec import remote_spec
from hana_server.store.model import Model


def tags_fields(model: Model) -> dict[str, Any]:
    """`remote_model` / `remote_host` for an `/api/tags` entry (nothing for a local model)."""
    spec = remote_spec(model.config)
    if spec is None:
        return {}
    fields: dict[str, Any] = {"remote_model": spec.model, "remote_host": spec.host}
    if spec.api != "ollama":
        fields["remote_api"] = spec.api
    return fields


def model_info(model: Model) -> dict[str, Any]:
    """Ollama's `model_info` of a remote model: only what create's `info` gave."""
    config = model.config
    family = config.get("model_family")
    if not family:
        return {}
    info: dict[str, Any] = {"general.architecture": family}
    if config.get("base_name"):
        info["general.basename"] = config["base_name"]
    for key in ("context_length", "embedding_length"):
        if config.get(key):
            info[f"{family}.{key}"] = config[key]
    return info


def modelfile_from(model: Model) -> str:
    """What a Modelfile's FROM names: the upstream's model for a remote one, else the blob."""
    spec = remote_spec(model.config)
    return spec.model if spec else str(model.model_path)
