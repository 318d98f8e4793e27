"""The transport limits on the Jupyter routes (`{base_url}hana/...`): per-route body caps, Ollama
JSON for unknown routes and wrong methods, behind Jupyter's auth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hana_server.extension import HanaApp
from tornado.httpclient import HTTPClientError


def fetch_error(run: Any, jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as error:
        run(jp_fetch(*path, **kwargs))
    assert error.value.response is not None
    return error.value.code, json.loads(error.value.response.body)


@pytest.mark.parametrize("hana_config", [{"max_request_body": 1000}])
def test_json_bodies_are_capped_per_route(run: Any, jp_fetch: Any, hana_app: HanaApp) -> None:
    body = json.dumps({"model": "tiny", "prompt": "x" * 2000})
    code, error = fetch_error(run, jp_fetch, "hana", "api", "generate", method="POST", body=body)
    assert code == 413 and "too large" in error["error"]
    # An upload is not a JSON body: its own, larger limit applies.
    data = b"\0" * 5000
    digest = "sha256:" + "0" * 64
    code, error = fetch_error(
        run, jp_fetch, "hana", "api", "blobs", digest, method="POST", body=data
    )
    assert code == 400 and "digest mismatch" in error["error"]


@pytest.mark.parametrize(
    ("method", "path", "code", "message"),
    [
        ("GET", ("hana", "nope"), 404, "404 page not found"),
        ("POST", ("hana", "api", "generate", "extra"), 404, "404 page not found"),
        ("GET", ("hana", "api", "generate"), 405, "405 method not allowed"),
        ("POST", ("hana", "api", "tags"), 405, "405 method not allowed"),
    ],
)
def test_unknown_routes_answer_ollama_json(
    run: Any, jp_fetch: Any, hana_app: HanaApp, method: str, path: tuple, code: int, message: str
) -> None:
    body = "{}" if method == "POST" else None
    assert fetch_error(run, jp_fetch, *path, method=method, body=body) == (
        code,
        {"error": message},
    )
