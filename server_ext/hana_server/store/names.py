"""Model names: Ollama's `[scheme://][host/][namespace/]model[:tag]` rules, defaults, display."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hana_protocol.errors import InvalidRequest

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# A part that a separator promised but that was empty: never valid, like Ollama's "!MISSING!".
_MISSING = "!MISSING!"

# First character alphanumeric or "_", then alnum, "_", "-" plus the kind's extra characters.
_PART_PATTERNS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}"),
}


class InvalidModelName(InvalidRequest):
    """The string is not a valid model name."""

    def __init__(self, name: str) -> None:
        super().__init__("invalid model name")
        self.name = name


def _cut_last(s: str, sep: str) -> tuple[str, str, bool]:
    """Split at the last `sep`; an empty side becomes the missing marker, as in Ollama."""
    before, found, after = s.rpartition(sep)
    if not found:
        return s, "", False
    return before or _MISSING, after or _MISSING, True


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name. Build one with `ModelName.parse`."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """Parse `s`, fill Ollama's defaults, and raise InvalidModelName if any part is invalid."""
        host = namespace = tag = ""
        rest = s
        # "/" can never be in a tag, so a ":" after the last "/" starts the tag; an earlier one
        # belongs to a host port.
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag, _ = _cut_last(rest, ":")
        rest, model, promised = _cut_last(rest, "/")
        if not promised:
            model = rest
        else:
            rest, namespace, promised = _cut_last(rest, "/")
            if not promised:
                namespace = rest
            else:
                _scheme, sep, host = rest.partition("://")
                if not sep:
                    host = rest
        name = cls(
            host=host or DEFAULT_HOST,
            namespace=namespace or DEFAULT_NAMESPACE,
            model=model,
            tag=tag or DEFAULT_TAG,
        )
        for kind, part in zip(("host", "namespace", "model", "tag"), name.parts, strict=True):
            if not _PART_PATTERNS[kind].fullmatch(part):
                raise InvalidModelName(s)
        return name

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """Ollama's shortest form: default host and `library` dropped, the tag always shown."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def manifest_relpath(self) -> Path:
        """Where the manifest lives under `manifests/`: host/namespace/model/tag."""
        return Path(self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.display
