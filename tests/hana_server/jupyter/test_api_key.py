"""HanaApp with `c.HanaApp.api_key`: the Jupyter routes keep Jupyter's auth, the shared port needs
the key, and a kernel started by the server calls it with no setup (the key is in its env)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hana_server.extension import HanaApp
from jupyter_kernel import execute_in_kernel

KEY = "kernel-visible-key"


@pytest.fixture
def hana_config() -> dict[str, Any]:
    return {"api_key": KEY}


def test_shared_port_needs_the_key_jupyter_routes_do_not(
    run: Any, jp_fetch: Any, tiny_model: str, hana_app: HanaApp
) -> None:
    listed = json.loads(run(jp_fetch("hana", "api", "tags")).body)  # Jupyter token, no key
    assert [m["name"] for m in listed["models"]] == ["tiny:latest"]
    url = hana_app.service.url
    assert url is not None

    async def shared_port() -> tuple[httpx.Response, httpx.Response]:
        # Async: the server runs on this thread's loop.
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            bare = await client.get("/api/tags")
            keyed = await client.get("/api/tags", headers={"Authorization": f"Bearer {KEY}"})
        return bare, keyed

    bare, keyed = run(shared_port())
    assert bare.status_code == 401
    assert keyed.status_code == 200
    assert [m["name"] for m in keyed.json()["models"]] == ["tiny:latest"]


KERNEL_CODE = """
import json, os
import ollama
from hana_client import HanaClient
with HanaClient() as client:
    names = [m["name"] for m in client.models()]
with ollama.Client() as official:
    reply = official.generate(model="tiny", prompt="hi", options={"num_predict": 2})
print(json.dumps({"names": names, "eval_count": reply.eval_count,
                  "keys": [os.environ.get("HANA_API_KEY"), os.environ.get("OLLAMA_API_KEY")]}))
"""


def test_kernel_started_by_the_server_calls_with_the_key(
    run: Any, jp_serverapp: Any, tiny_model: str, hana_app: HanaApp
) -> None:
    printed = run(execute_in_kernel(jp_serverapp.kernel_manager, KERNEL_CODE))
    result = json.loads(printed)
    assert result == {"names": ["tiny:latest"], "eval_count": 2, "keys": [KEY, KEY]}
