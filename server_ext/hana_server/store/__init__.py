"""Model store: names, GGUF metadata, prompt templates, and manifests + blobs in Ollama's layout."""

from __future__ import annotations

from hana_server.store.gguf_info import GGUFInfo, InvalidGGUF
from hana_server.store.model import Model
from hana_server.store.names import InvalidModelName, ModelName
from hana_server.store.store import ModelStore

__all__ = [
    "GGUFInfo",
    "InvalidGGUF",
    "InvalidModelName",
    "Model",
    "ModelName",
    "ModelStore",
]
