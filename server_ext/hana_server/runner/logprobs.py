"""Logprob entries in Ollama's shape, built on the engine thread from what the sampler found:
`{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}` (server/logprob.go)."""

from __future__ import annotations

import ctypes
from typing import Any

from hana_server.runner.model import LoadedModel
from hana_server.runner.sampling import TokenLogprobs


class LogprobEntries:
    """Token texts as logprobs show them (end-of-generation tokens included), cached per token:
    `token` is the piece decoded as UTF-8 (invalid bytes replaced), `bytes` its raw bytes."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._texts: dict[int, tuple[str, list[int]]] = {}
        self._buffer = ctypes.create_string_buffer(256)

    def entry(self, token: int, found: TokenLogprobs) -> dict[str, Any]:
        fields = self._fields(token, found.logprob)
        fields["top_logprobs"] = [self._fields(other, value) for other, value in found.top]
        return fields

    def _fields(self, token: int, logprob: float) -> dict[str, Any]:
        known = self._texts.get(token)
        if known is None:
            raw = self._model.piece(token, self._buffer)
            known = (raw.decode("utf-8", errors="replace"), list(raw))
            self._texts[token] = known
        text, raw_bytes = known
        fields: dict[str, Any] = {"token": text, "logprob": logprob}
        if raw_bytes:  # Ollama omits empty bytes
            fields["bytes"] = raw_bytes
        return fields
