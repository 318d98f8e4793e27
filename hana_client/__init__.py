"""hana_client: the one client library of hana's HTTP API (Ollama's API plus hana's state routes).

The `hana` CLI verbs, the `%hana` magics, the `ModelManager` and the runner panel all talk to a
server through `HanaClient`. Imports `hana_protocol`, httpx and traitlets; never the server, never
IPython.

Modules, one job each: `client` (HanaClient), `sync` (sync twins generated from async methods),
`loop` (the background event loop behind them), `streams` (the NDJSON and SSE readers),
`answer` (Answer, a folded generate/chat result), `payload` (request bodies), `discovery`
(which server; the embedded child server).
"""

from __future__ import annotations

from hana_client.answer import Answer
from hana_client.client import HanaClient
from hana_client.loop import BackgroundLoop, BackgroundTask, background_loop
from hana_protocol.errors import HanaError, InvalidRequest, ModelNotFound, ServerUnreachable

__all__ = [
    "Answer",
    "BackgroundLoop",
    "BackgroundTask",
    "HanaClient",
    "HanaError",
    "InvalidRequest",
    "ModelNotFound",
    "ServerUnreachable",
    "background_loop",
]
