"""Environment variables read the way Ollama reads them: first set name wins, quotes trimmed."""

from __future__ import annotations

import os
from pathlib import Path


def env_value(*names: str) -> str | None:
    """The first of these env vars that is set and not empty, trimmed of spaces and quotes."""
    for name in names:
        value = os.environ.get(name, "").strip().strip("'\"")
        if value:
            return value
    return None


def env_int(*names: str, fallback: int) -> int:
    """The first set variable as an integer, or `fallback` when unset or not a number."""
    value = env_value(*names)
    try:
        return int(value) if value is not None else fallback
    except ValueError:
        return fallback


def default_models_dir() -> Path:
    """HANA_MODELS, else OLLAMA_MODELS, else Ollama's own ~/.ollama/models when it holds models
    and is writable, else ~/.hana/models.

    One store shared with Ollama: models pulled by either tool are seen and run by both with no
    copy and no second download, in the same layout. Only a writable one is taken, because hana
    pulls and creates into its store; a read-only one (Linux's system service keeps its models
    in /usr/share/ollama, owned by the `ollama` user) needs HANA_MODELS or OLLAMA_MODELS.
    """
    value = env_value("HANA_MODELS", "OLLAMA_MODELS")
    if value:
        return Path(value).expanduser()
    ollama = Path.home() / ".ollama" / "models"
    if (ollama / "manifests").is_dir() and os.access(ollama / "blobs", os.W_OK):
        return ollama
    return Path.home() / ".hana" / "models"
