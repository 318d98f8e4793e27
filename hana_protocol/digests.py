"""Content digests as Ollama names blobs: `sha256:<hex>`."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as data:
        for block in iter(lambda: data.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def blob_digest(path: Path) -> str:
    """The `sha256:<hex>` name of a file's blob."""
    return "sha256:" + sha256_file(path)
