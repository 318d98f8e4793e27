"""Fuzz every operation of the API's OpenAPI document (schemathesis strategies driven by
hypothesis) against a running server: valid and invalid bodies, paths and parameters. Used by
`make fuzz` (bench/fuzz.py, a real `hana serve`) and a bounded smoke in the suite (scripted
runners). Counts cases, answers by status, 5xx (with a curl line to replay) and hangs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.generation import GenerationMode

# Not fuzzed: the event stream is endless by design, and a pull of a fuzzed name would go to the
# public registry (this machine may reach no host but its own; pulls are tested against the
# loopback registry in test_pull.py).
SKIP_PATHS = ("/api/hana/events", "/api/pull")
# Routes whose `model` may be swapped for an installed one so fuzzed options reach a runner;
# never create/copy/delete, which would change what the other cases find.
MODEL_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/api/show",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)
MAX_TOKENS = 8  # a swapped-in model generates this many tokens at most: the run stays short


@dataclass
class FuzzReport:
    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    hangs: list[dict[str, Any]] = field(default_factory=list)
    connection_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "cases": self.cases,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": len(self.server_errors),
            "hangs": len(self.hangs),
            "connection_errors": len(self.connection_errors),
            "seconds": round(self.seconds, 1),
            "server_error_cases": self.server_errors[:50],
            "hang_cases": self.hangs[:50],
        }


def fuzz(
    base_url: str,
    document: dict[str, Any],
    *,
    examples: int = 50,
    timeout: float = 30.0,
    models: tuple[str, ...] = (),
    seed: int = 0,
) -> FuzzReport:
    """Send `examples` positive and `examples` negative cases per operation to `base_url`."""
    schema = schemathesis.openapi.from_dict(document)
    report = FuzzReport()
    chooser = random.Random(seed)
    session = requests.Session()
    session.trust_env = False
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIP_PATHS:
            continue
        report.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                verbosity=hypothesis.Verbosity.quiet,
            )
            def send(case: Any) -> None:
                if models and case.operation.path in MODEL_ROUTES and chooser.random() < 0.5:
                    use_model(case, chooser.choice(models))
                report.cases += 1
                try:
                    response = case.call(base_url=base_url, session=session, timeout=timeout)
                except requests.Timeout:
                    report.hangs.append(describe(case, base_url))
                    return
                except requests.ConnectionError as error:
                    report.connection_errors.append(
                        {**describe(case, base_url), "error": str(error)}
                    )
                    return
                report.statuses[response.status_code] += 1
                if response.status_code >= 500:
                    report.server_errors.append(
                        {
                            **describe(case, base_url),
                            "status": response.status_code,
                            "answer": response.text[:300],
                        }
                    )

            try:
                send()
            except (hypothesis.errors.Unsatisfiable, hypothesis.errors.FailedHealthCheck):
                continue  # e.g. no invalid request exists for a GET without parameters
    report.seconds = time.monotonic() - started
    return report


def use_model(case: Any, model: str) -> None:
    """Point a fuzzed body at an installed model, its fuzzed options kept but output capped."""
    body = case.body
    if not isinstance(body, dict):
        return
    body["model"] = model
    options = body.get("options")
    if isinstance(options, dict):
        options["num_predict"] = MAX_TOKENS
    elif "options" in body or "prompt" in body or "messages" in body:
        body["options"] = {"num_predict": MAX_TOKENS}
    for key in ("max_tokens", "max_completion_tokens"):
        if key in body:
            body[key] = MAX_TOKENS
    if case.operation.path.startswith("/v1/") and "max_tokens" not in body:
        body["max_tokens"] = MAX_TOKENS


def describe(case: Any, base_url: str) -> dict[str, Any]:
    try:
        curl = case.as_curl_command(headers=None)
    except Exception:  # a body schemathesis cannot print is still reported
        curl = repr(case.body)[:300]
    return {
        "method": case.method,
        "path": case.formatted_path,
        "valid_utf8_body": valid_utf8(case.body),
        "curl": curl[:600],
    }


def valid_utf8(body: Any) -> bool:
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
