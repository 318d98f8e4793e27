"""The URL table of the API, built for a host's base handler class and path prefix."""

from __future__ import annotations

from typing import Any

from tornado import web

from hana_server.api import native, openai, state


def handler_classes() -> list[tuple[str, type[web.RequestHandler]]]:
    """(path below the prefix, handler mixin) pairs; the order matters for tornado."""
    return [
        (r"/?", native.RootHandler),
        (r"/api/version", native.VersionHandler),
        (r"/api/generate", native.GenerateHandler),
        (r"/api/chat", native.ChatHandler),
        (r"/api/tags", native.TagsHandler),
        (r"/api/ps", native.PsHandler),
        (r"/api/show", native.ShowHandler),
        (r"/api/create", native.CreateHandler),
        (r"/api/copy", native.CopyHandler),
        (r"/api/pull", native.PullHandler),
        (r"/api/delete", native.DeleteHandler),
        (r"/api/embed", native.EmbedHandler),
        (r"/api/embeddings", native.EmbeddingsHandler),
        (r"/api/blobs/([^/]+)", native.BlobHandler),
        (r"/api/hana/events", state.EventsHandler),
        (r"/api/hana/status", state.StatusHandler),
        (r"/v1/chat/completions", openai.ChatCompletionsHandler),
        (r"/v1/completions", openai.CompletionsHandler),
        (r"/v1/embeddings", openai.EmbeddingsHandler),
        (r"/v1/models", openai.ModelsHandler),
        (r"/v1/models/(.+)", openai.ModelHandler),
    ]


def build_routes(
    prefix: str, base: type[web.RequestHandler] | None = None, **kwargs: Any
) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """Routes under `prefix`, each handler combined with the host's `base` class (auth etc.)."""
    routes = []
    prefix = prefix.rstrip("/")
    for path, mixin in handler_classes():
        cls = mixin if base is None else type(mixin.__name__, (mixin, base), {})
        if getattr(mixin, "_stream_request_body", False):
            cls = web.stream_request_body(cls)
        routes.append((prefix + path, cls, kwargs))
    return routes
