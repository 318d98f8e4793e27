"""The API's OpenAPI 3.1 document, built from the pydantic request models (`hana_server.requests`
for Ollama's native routes, `hana_server.openai_requests` for `/v1`) and served at
`/api/openapi.json`. `make fuzz` generates requests for every operation from it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hana_server import __version__, openai_requests, requests
from hana_server.api.base import HanaHandlerMixin

OPENAPI_PATH = "/api/openapi.json"

JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
TEXT = "text/plain"

# (method, path, summary, request body model, response content types); paths are the routes of
# api/routes.py in OpenAPI's template syntax. A test checks that the two tables agree.
OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, tuple[str, ...]]] = [
    ("get", "/", "Liveness: `Ollama is running`", None, (TEXT,)),
    ("head", "/", "Liveness without a body", None, ()),
    ("get", "/api/version", "Version of the API and of hana", None, (JSON,)),
    ("head", "/api/version", "Version (headers only)", None, ()),
    ("post", "/api/generate", "Complete a prompt", requests.GenerateRequest, (NDJSON, JSON)),
    ("post", "/api/chat", "Answer the next turn of a chat", requests.ChatRequest, (NDJSON, JSON)),
    ("get", "/api/tags", "Installed models", None, (JSON,)),
    ("head", "/api/tags", "Installed models (headers only)", None, ()),
    ("get", "/api/ps", "Loaded models and their runners", None, (JSON,)),
    ("post", "/api/show", "Everything about one model", requests.ShowRequest, (JSON,)),
    ("post", "/api/create", "Create a model", requests.CreateRequest, (NDJSON, JSON)),
    ("post", "/api/copy", "Copy a model", requests.CopyRequest, ()),
    (
        "post",
        "/api/pull",
        "Download a model from its registry",
        requests.PullRequest,
        (NDJSON, JSON),
    ),
    ("delete", "/api/delete", "Delete a model", requests.DeleteRequest, ()),
    ("post", "/api/embed", "Embeddings", requests.EmbedRequest, (JSON,)),
    ("post", "/api/embeddings", "Embedding (legacy)", requests.EmbeddingsRequest, (JSON,)),
    ("head", "/api/blobs/{digest}", "Whether a blob exists", None, ()),
    ("post", "/api/blobs/{digest}", "Upload a blob (streamed to disk)", None, ()),
    ("get", "/api/hana/events", "Runner state changes (server-sent events)", None, (SSE,)),
    ("get", "/api/hana/status", "Snapshot of runners and settings", None, (JSON,)),
    ("get", OPENAPI_PATH, "This document", None, (JSON,)),
    ("get", "/metrics", "Prometheus metrics (text exposition format)", None, (TEXT,)),
    (
        "post",
        "/v1/chat/completions",
        "OpenAI chat completions",
        openai_requests.ChatCompletionRequest,
        (JSON, SSE),
    ),
    (
        "post",
        "/v1/completions",
        "OpenAI text completions",
        openai_requests.CompletionRequest,
        (JSON, SSE),
    ),
    (
        "post",
        "/v1/embeddings",
        "OpenAI embeddings",
        openai_requests.EmbeddingRequest,
        (JSON,),
    ),
    ("get", "/v1/models", "OpenAI model list", None, (JSON,)),
    ("get", "/v1/models/{model}", "One model, OpenAI's shape", None, (JSON,)),
]

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "digest": {"type": "string", "pattern": "^sha256[:-][0-9a-fA-F]{64}$"},
    "model": {"type": "string", "minLength": 1},
}

ERROR = {
    "type": "object",
    "properties": {"error": {"type": ["string", "object"]}},
    "required": ["error"],
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole API as an OpenAPI 3.1 document (built once)."""
    models = sorted({op[3] for op in OPERATIONS if op[3] is not None}, key=lambda m: m.__name__)
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, model, content_types in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_') or 'root'}",
            "responses": _responses(content_types),
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in PATH_PARAMETERS.items()
            if "{" + name + "}" in path
        ]
        if parameters:
            operation["parameters"] = parameters
        if model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": refs[(model, "validation")]}},
            }
        elif method == "post":  # the blob upload: raw bytes
            operation["requestBody"] = {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hana: an Ollama-compatible model server",
            "version": __version__,
            "description": "Ollama's native API, OpenAI's /v1 routes and hana's own state routes.",
        },
        "paths": paths,
        "components": {"schemas": {**definitions.get("$defs", {}), "Error": ERROR}},
    }


def _responses(content_types: tuple[str, ...]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Success"}
    if content_types:
        ok["content"] = {kind: {"schema": {}} for kind in content_types}
    error = {"content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "200": ok,
        "4XX": {"description": "Bad request, unknown model or blob, too large", **error},
        "5XX": {"description": "Server error (queue full: 503)", **error},
    }


class OpenAPIHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """The API's OpenAPI document."""
        self.send_json(openapi_document())
