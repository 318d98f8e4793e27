"""What the API says about the router's name: an /api/tags entry, an /api/show answer, a /v1
model object, so Ollama and OpenAI clients can discover `auto` and see where it routes.

`auto` is listed (as `auto:latest`, Ollama's display form) only when the server has routes. Its
details say `format: router`; its families are the routed models; its capabilities are those
every installed routed model shares (at least `completion`); `model_info` maps `hana.route.<tier>`
to each tier's model. Size 0: the router holds no weights of its own.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from hana_server.routing.router import Router
from hana_server.store.store import ModelStore

STARTED = datetime.now(UTC)  # the router's "modified_at": routes are read at server start


def _display(router: Router) -> str:
    return f"{router.name}:latest"


def _capabilities(router: Router, store: ModelStore) -> list[str]:
    shared: set[str] | None = None
    for model_name in router.settings.routes.values():
        try:
            caps = set(store.get(model_name).capabilities)
        except Exception:  # a missing or damaged model is a fallback matter, not a listing one
            continue
        shared = caps if shared is None else shared & caps
    return sorted((shared or set()) | {"completion"} - {"embedding"})


def _details(router: Router) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "router",
        "family": "router",
        "families": list(dict.fromkeys(router.settings.routes.values())),
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(router: Router) -> str:
    text = json.dumps([router.name, list(router.settings.routes.items())])
    return hashlib.sha256(text.encode()).hexdigest()


def tags_entries(router: Router, store: ModelStore) -> list[dict[str, Any]]:
    """`[entry]` for /api/tags when routes are configured, else `[]`."""
    if not router.settings.routes:
        return []
    return [
        {
            "name": _display(router),
            "model": _display(router),
            "modified_at": STARTED.isoformat(),
            "size": 0,
            "digest": _digest(router),
            "details": _details(router),
            "capabilities": _capabilities(router, store),
        }
    ]


def show(router: Router, store: ModelStore) -> dict[str, Any]:
    """The /api/show answer for the router's name (with or without routes: it says which)."""
    routes = router.settings.routes
    lines = [f"# {router.name}: hana routes each request to a tier's model by its complexity"]
    lines += [f"# {tier:<10} -> {model}" for tier, model in routes.items()] or ["# no routes"]
    return {
        "license": "",
        "modelfile": "\n".join(lines) + "\n",
        "parameters": "",
        "template": "",
        "details": _details(router),
        "model_info": {
            "general.architecture": "router",
            "hana.route.tiers": list(routes),
            **{f"hana.route.{tier}": model for tier, model in routes.items()},
            "hana.route.grading": router.settings.route_grading,
        },
        "capabilities": _capabilities(router, store),
        "modified_at": STARTED.isoformat(),
    }


def openai_entries(router: Router) -> list[dict[str, Any]]:
    """`[model object]` for /v1/models when routes are configured, else `[]`."""
    if not router.settings.routes:
        return []
    return [openai_object(router)]


def openai_object(router: Router) -> dict[str, Any]:
    return {
        "id": _display(router),
        "object": "model",
        "created": int(STARTED.timestamp()),
        "owned_by": "hana",
    }


def names_router(router: Router, store: ModelStore, name: str) -> bool:
    """Whether `name` means the router here: its name, and no installed model of that name."""
    if not router.handles(name):
        return False
    try:
        store.get(name)
    except Exception:
        return True
    return False
