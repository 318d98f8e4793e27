"""A bounded fuzz of every API operation from the served OpenAPI document (the real HTTP app,
scripted runners): no request gets a 5xx, none hangs. `make fuzz` is the long run."""

from __future__ import annotations

from api_fuzz import fuzz
from hana_server.api.openapi import OPERATIONS
from hana_server.api.routes import handler_classes
from scripted_server import ScriptedServer
from tornado import web


def test_the_document_covers_every_route(scripted_server: ScriptedServer) -> None:
    document = scripted_server.http.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path.replace("{digest}", "([^/]+)").replace("{model}", "(.+)"))
        for path, operations in document["paths"].items()
        for method in operations
    }
    # Every verb a route's handler implements is documented, and nothing else.
    implemented = {
        (verb, path.replace("/?", "/").replace("\\.", "."))
        for path, handler in handler_classes()
        if path != "/.*"
        for verb in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
        if getattr(handler, verb.lower()) is not web.RequestHandler._unimplemented_method
    }
    assert documented == implemented


def test_fuzz_smoke_finds_no_server_errors_and_no_hangs(scripted_server: ScriptedServer) -> None:
    scripted_server.create_tiny("tiny")
    document = scripted_server.http.get("/api/openapi.json").json()
    report = fuzz(scripted_server.url, document, examples=8, timeout=20, models=("tiny",))
    assert report.operations == len(OPERATIONS) - 2  # all but the event stream and pull
    assert report.cases >= report.operations * 8
    assert report.hangs == [] and report.connection_errors == []
    assert report.server_errors == []
