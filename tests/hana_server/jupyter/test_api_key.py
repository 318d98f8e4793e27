"""HanaApp with `c.HanaApp.api_key`: the Jupyter routes keep Jupyter's auth, the shared port needs
the key, and a kernel started by the server calls it with no setup (the key is in its env)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hana_server.extension import HanaApp

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
    manager = jp_serverapp.kernel_manager

    async def in_kernel() -> dict[str, Any]:
        kernel_id = await manager.start_kernel()
        client = manager.get_kernel(kernel_id).client()
        client.start_channels()
        seen: list[str] = []
        errors: list[str] = []

        def output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                seen.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        try:
            await client.wait_for_ready(timeout=60)
            await client.execute_interactive(KERNEL_CODE, output_hook=output, timeout=120)
        finally:
            client.stop_channels()
            await manager.shutdown_kernel(kernel_id, now=True)
        assert not errors, errors
        return json.loads("".join(seen))

    result = run(in_kernel())
    assert result == {"names": ["tiny:latest"], "eval_count": 2, "keys": [KEY, KEY]}
