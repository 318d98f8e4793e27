"""The kernel's names for `hana_client` (the one client library), kept for existing notebooks.

`Completion` is `hana_client.Answer`; the error names are the `hana_protocol.errors` types the
client raises (`RequestError` = `HanaError`, with `.status` and `.message`).
"""

from __future__ import annotations

from hana_client import Answer, BackgroundLoop, BackgroundTask, HanaClient, background_loop
from hana_client.payload import keep_alive_value
from hana_protocol.errors import HanaError, ModelNotFound, ServerUnreachable
from hana_protocol.hosts import normalize_url

Completion = Answer
HanaClientError = HanaError
RequestError = HanaError
ModelNotFoundError = ModelNotFound

__all__ = [
    "Answer",
    "BackgroundLoop",
    "BackgroundTask",
    "Completion",
    "HanaClient",
    "HanaClientError",
    "ModelNotFoundError",
    "RequestError",
    "ServerUnreachable",
    "background_loop",
    "keep_alive_value",
    "normalize_url",
]
