"""`Model`: one installed model as its manifest describes it, with Ollama's details and
capabilities (what the weights and the prompt template let it do)."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.names import ModelName
from hana_server.store.template_tags import parsed_template, thinking_tags

log = logging.getLogger("hana.store")

# Capabilities that come from the weights; the others come from the prompt template.
WEIGHT_CAPABILITIES = ("completion", "embedding", "vision", "audio")


THINKING_FAMILIES = ("gptoss", "gpt-oss")  # harmony models think without tags in a template


def template_capabilities(
    template: str | None, chat_template: str | None = None, family: str = ""
) -> list[str]:
    """What a prompt template lets a model do, decided as Ollama decides it.

    A Go template: it mentions `.Tools` (tools), `.Suffix` (insert), and thinking tags can be
    inferred from it (thinking, see template_tags.py). Without one, the GGUF's Jinja template:
    it mentions `tools` or `tool_call` (tools), or both `<think>` and `</think>` (thinking).
    The gpt-oss family always thinks (its harmony format has channels instead of tags).
    """
    found = []
    if template is not None:
        names = _identifiers(template)
        if "tools" in names:
            found.append("tools")
        if "suffix" in names:
            found.append("insert")
        if thinking_tags(template) is not None:
            found.append("thinking")
    elif chat_template:
        if "tools" in chat_template or "tool_call" in chat_template:  # Ollama: substrings
            found.append("tools")
        if "<think>" in chat_template and "</think>" in chat_template:
            found.append("thinking")
    if family in THINKING_FAMILIES and "thinking" not in found:
        found.append("thinking")
    return found


def _identifiers(template: str) -> frozenset[str]:
    parsed = parsed_template(template)
    if parsed is None:
        # Unparseable: requests to it get the parser's 400; list what the text mentions.
        return frozenset(m.lower() for m in re.findall(r"\.([A-Za-z]\w*)", template))
    return parsed.identifiers()


def weight_capabilities(info: GGUFInfo) -> list[str]:
    """Ollama's rules on the GGUF: a pooling type makes an embedding model, anything else
    completes text; a vision (or audio) encoder adds vision (audio)."""
    found = ["embedding"] if info.pooling_type is not None else ["completion"]
    for part in ("vision", "audio"):
        if f"{info.architecture}.{part}.block_count" in info.kv:
            found.append(part)
    return found


@functools.lru_cache(maxsize=256)
def _weight_capabilities_of(path: Path, mtime_ns: int) -> tuple[str, ...]:
    # A damaged GGUF must not break listings for everyone: it is shown as a completion model
    # (a request to it gets the reader's 400), and the failure is cached, so logged once.
    try:
        return tuple(weight_capabilities(GGUFInfo.read(path)))
    except InvalidRequest as error:
        log.warning("%s: %s (listed as a completion model)", path.name, error.message)
        return ("completion",)


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
        except OSError:
            return ["completion", *template_capabilities(self.template, family=self.family)]
        weights = list(_weight_capabilities_of(self.model_path, mtime_ns))
        return weights + template_capabilities(self.template, family=self.family)

    @property
    def family(self) -> str:
        return str(self.config.get("model_family") or "")
