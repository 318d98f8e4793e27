"""What the store tests share: a Modelfile that sets every layer, digests of bytes, the files in
blobs/."""

from __future__ import annotations

import hashlib
from pathlib import Path

TEMPLATE = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}"
MODELFILE = f'''\
FROM ./tiny.gguf
TEMPLATE """{TEMPLATE}"""
SYSTEM You are terse.
PARAMETER temperature 0.2
PARAMETER stop </s>
PARAMETER stop <|end|>
MESSAGE user Hi
MESSAGE assistant Hello!
LICENSE MIT
'''


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(blobs_dir: Path) -> set[str]:
    """Every file in blobs/, temp files included."""
    return {p.name for p in blobs_dir.iterdir()} if blobs_dir.exists() else set()
