"""HanaApp inside a Jupyter server: auth, streaming, the shared port, discovery, shutdown."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import psutil
import pytest
from hana_server.extension import HanaApp
from jupyter_kernel import execute_in_kernel
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

GENERATE = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 6, "temperature": 0}}


def api_url(http_server_client: Any, jp_base_url: str, path: str) -> str:
    """Absolute URL of a hana route on the Jupyter server, `/a%40b/` base_url included."""
    return http_server_client.get_url(jp_base_url + "hana/" + path)


def runner_pids() -> list[int]:
    """Runner processes started by this test process (the in-process extension's runners are its
    direct children; servers of other test modules run their runners one level further down)."""
    pids = []
    for child in psutil.Process().children():
        try:
            if "hana_server.runner" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


# ------------------------------------------------------------------------ routes behind Jupyter


def test_authenticated_routes_serve_the_api(
    run: Any, jp_fetch: Any, tiny_model: str, hana_app: HanaApp
) -> None:
    tags = json.loads(run(jp_fetch("hana", "api", "tags")).body)
    assert [m["name"] for m in tags["models"]] == ["tiny:latest"]

    response = run(jp_fetch("hana", "api", "generate", method="POST", body=json.dumps(GENERATE)))
    lines = [json.loads(line) for line in response.body.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 6
    assert response.headers["Content-Type"] == "application/x-ndjson"

    root = run(jp_fetch("hana"))
    assert root.body == b"Ollama is running"
    assert root.headers["Content-Type"].startswith("text/plain")  # not forced to JSON

    models = json.loads(run(jp_fetch("hana", "v1", "models")).body)
    assert [m["id"] for m in models["data"]] == ["tiny:latest"]


def test_errors_keep_ollamas_shape(run: Any, jp_fetch: Any, hana_app: HanaApp) -> None:
    body = json.dumps({"model": "missing", "prompt": "hi"})
    with pytest.raises(HTTPClientError) as error:
        run(jp_fetch("hana", "api", "generate", method="POST", body=body))
    assert error.value.code == 404
    assert error.value.response is not None
    assert json.loads(error.value.response.body) == {"error": "model 'missing' not found"}


def test_unauthenticated_calls_get_403(
    run: Any, http_server_client: Any, jp_base_url: str, hana_app: HanaApp, tiny_gguf_path: Path
) -> None:
    def fetch(path: str, **kwargs: Any) -> Any:
        # this client prefixes its own scheme, host and port
        return run(
            http_server_client.fetch(f"{jp_base_url}hana/{path}", raise_error=False, **kwargs)
        )

    for path, kwargs in [
        ("api/tags", {}),
        ("api/hana/status", {}),
        ("api/generate", {"method": "POST", "body": json.dumps(GENERATE)}),
        ("v1/models", {}),
    ]:
        response = fetch(path, **kwargs)
        assert response.code == 403, path
        assert "error" in json.loads(response.body)

    # The blob body is streamed to disk as it arrives: auth must come before the first byte.
    digest = "sha256:" + "0" * 64
    response = fetch(f"api/blobs/{digest}", method="POST", body=tiny_gguf_path.read_bytes())
    assert response.code == 403
    blobs = Path(hana_app.models_dir) / "blobs"
    assert not blobs.exists() or not list(blobs.iterdir())


class ReadOnlyHana(Authorizer):
    """Lets users look at hana but not generate: what a JupyterHub RBAC scope could do."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource == "hana" and action == "write")


@pytest.mark.parametrize("server_config", [{"authorizer_class": ReadOnlyHana}])
def test_authorizer_decides_per_verb(run: Any, jp_fetch: Any, hana_app: HanaApp) -> None:
    assert run(jp_fetch("hana", "api", "tags")).code == 200
    with pytest.raises(HTTPClientError) as error:
        run(jp_fetch("hana", "api", "generate", method="POST", body=json.dumps(GENERATE)))
    assert error.value.code == 403
    assert error.value.response is not None
    assert json.loads(error.value.response.body) == {
        "error": "user is not authorized to write hana"
    }


def test_status_poll_is_not_user_activity(
    run: Any, jp_fetch: Any, jp_serverapp: Any, hana_app: HanaApp
) -> None:
    settings = jp_serverapp.web_app.settings
    run(jp_fetch("hana", "api", "tags"))
    before = settings["api_last_activity"]
    time.sleep(0.01)
    status = json.loads(run(jp_fetch("hana", "api", "hana", "status")).body)
    assert status["url"] == hana_app.service.url
    assert settings["api_last_activity"] == before
    run(jp_fetch("hana", "api", "tags"))
    assert settings["api_last_activity"] > before


def test_stream_arrives_while_generating(
    run: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    tiny_model: str,
    hana_app: HanaApp,
) -> None:
    """Chunks reach the client while the runner still generates, and the server counts as busy."""
    url = api_url(http_server_client, jp_base_url, "api/generate")
    body = {**GENERATE, "options": {"num_predict": 128, "temperature": 0}}

    async def read() -> tuple[list[dict[str, Any]], bool]:
        lines: list[dict[str, Any]] = []
        busy_at_first_chunk = False
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", url, json=body, headers=jp_auth_header) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not lines:
                    busy_at_first_chunk = hana_app.current_activity()
                lines.append(json.loads(line))
        return lines, busy_at_first_chunk

    lines, busy_at_first_chunk = run(read())
    assert busy_at_first_chunk, "the first chunk came only after the generation ended"
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 128
    assert not hana_app.current_activity()


def test_official_clients_with_the_jupyter_token(
    run: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    tiny_model: str,
) -> None:
    """What docs/jupyter.md tells users: a path prefix in the host and the token header."""
    base = api_url(http_server_client, jp_base_url, "").rstrip("/")

    async def ask() -> tuple[Any, Any]:
        token = jp_auth_header["Authorization"].split()[1]
        async with (
            ollama.AsyncClient(host=base, headers=jp_auth_header) as client,
            openai.AsyncOpenAI(base_url=base + "/v1", api_key=token) as api,  # sent as Bearer
        ):
            reply = await client.generate(model="tiny", prompt="hi", options={"num_predict": 3})
            completion = await api.completions.create(model="tiny", prompt="hi", max_tokens=3)
        return reply, completion

    reply, completion = run(ask())
    assert reply.eval_count == 3
    assert completion.usage is not None and completion.usage.completion_tokens == 3


# ----------------------------------------------------------------------- kernels and shutdown


def test_kernel_started_by_the_server_finds_hana(
    run: Any, jp_serverapp: Any, hana_app: HanaApp
) -> None:
    code = "import json, os; print(json.dumps({k: os.environ.get(k) for k in %r}))"
    printed = execute_in_kernel(jp_serverapp.kernel_manager, code % ["HANA_URL", "OLLAMA_HOST"])
    environ = json.loads(run(printed))
    assert environ["HANA_URL"] == hana_app.service.url
    assert environ["OLLAMA_HOST"] == hana_app.service.url.removeprefix("http://")


def test_stop_extension_leaves_no_runner(
    run: Any, jp_fetch: Any, tiny_model: str, hana_app: HanaApp, jp_serverapp: Any
) -> None:
    run(jp_fetch("hana", "api", "generate", method="POST", body=json.dumps(GENERATE)))
    runners = [psutil.Process(pid) for pid in runner_pids()]
    assert len(runners) == 1
    runtime = Path(jp_serverapp.runtime_dir) / f"hana-{os.getpid()}.json"
    assert runtime.exists()

    run(hana_app.stop_extension())

    _, alive = psutil.wait_procs(runners, timeout=5)
    assert not alive and not runner_pids()
    assert not runtime.exists()
    assert "HANA_URL" not in os.environ and "OLLAMA_HOST" not in os.environ
    with pytest.raises(httpx.ConnectError):
        httpx.get(hana_app.service.url or "", timeout=2)


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "hana_config",
    [{"keep_alive": "1h", "max_loaded_models": 1, "num_parallel": 2, "max_queue": 7}],
)
def test_config_traits_reach_the_service(run: Any, jp_fetch: Any, hana_app: HanaApp) -> None:
    settings = json.loads(run(jp_fetch("hana", "api", "hana", "status")).body)["settings"]
    assert settings["keep_alive"] == "1h"
    assert settings["max_loaded_models"] == 1
    assert settings["num_parallel"] == 2
    assert settings["max_queue"] == 7


@pytest.mark.parametrize("server_config", [{"allow_unauthenticated_access": True}])
def test_no_anonymous_access_even_when_jupyter_allows_it(
    run: Any, http_server_client: Any, jp_base_url: str, hana_app: HanaApp
) -> None:
    response = run(http_server_client.fetch(f"{jp_base_url}hana/api/tags", raise_error=False))
    assert response.code == 403


def test_cookie_sessions_need_the_xsrf_token(
    run: Any, http_server_client: Any, jp_base_url: str, jp_serverapp: Any, hana_app: HanaApp
) -> None:
    """A browser session (login cookie) must send X-XSRFToken with every POST, as for Jupyter."""
    token = jp_serverapp.identity_provider.token
    login = run(http_server_client.fetch(f"{jp_base_url}hana/api/tags?token={token}"))
    cookies = [c.split(";")[0] for c in login.headers.get_list("Set-Cookie")]
    assert cookies, "no login cookie"
    body = json.dumps({"model": "missing"})

    def show(headers: dict[str, str]) -> int:
        url = f"{jp_base_url}hana/api/show"
        kwargs = {"method": "POST", "body": body, "headers": headers, "raise_error": False}
        return run(http_server_client.fetch(url, **kwargs)).code

    assert show({"Cookie": "; ".join(cookies)}) == 403
    with_xsrf = {"Cookie": "; ".join([*cookies, "_xsrf=hana"]), "X-XSRFToken": "hana"}
    assert show(with_xsrf) == 404  # past auth: the model does not exist
