"""pytest-jupyter fixtures for the Jupyter host, for this folder only.

`pytest_plugins` is only allowed in the rootdir conftest, and there pytest-jupyter's autouse event
loop would apply to every test of the project; importing the fixtures here scopes them.

Tests here are plain functions that drive pytest-jupyter's loop with `run(...)`: the project runs
pytest-asyncio in auto mode, which would run `async def` tests on a loop of its own while the
Jupyter server lives on `jp_asyncio_loop`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T] | Awaitable[T]], T]


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """pytest-jupyter's loop fixture, always on a fresh loop: its own version reuses the main
    thread's current loop, which an earlier test's `asyncio.run()` may have unset or left stale."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension exports discovery variables into os.environ: undone after each test."""
    for name in (
        *("HANA_URL", "HANA_TOKEN", "OLLAMA_HOST", "HANA_HOST", "HANA_MODELS"),
        *("HANA_API_KEY", "OLLAMA_API_KEY"),
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(jp_asyncio_loop: Any) -> Run[Any]:
    """Run a coroutine on the Jupyter server's loop until it completes."""
    return jp_asyncio_loop.run_until_complete  # type: ignore[no-any-return]


@pytest.fixture
def hana_config() -> dict[str, Any]:
    """Extra `c.HanaApp` settings; a test overrides it with `@pytest.mark.parametrize`."""
    return {}


@pytest.fixture
def server_config() -> dict[str, Any]:
    """Extra `c.ServerApp` settings; a test overrides it with `@pytest.mark.parametrize`."""
    return {}


@pytest.fixture
def jp_server_config(
    tmp_path: Path, hana_config: dict[str, Any], server_config: dict[str, Any]
) -> dict[str, Any]:
    """hana enabled, a private model store, any free shared port, load failures as errors."""
    return {
        "ServerApp": {
            # pytest-jupyter adds the terminals extension unless told: its websocket handler
            # fails the server's own auth audit (JupyterServerAuthWarning); hana needs none.
            "jpserver_extensions": {"hana_server": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
            "reraise_server_extension_failures": True,
            **server_config,
        },
        "HanaApp": {
            "models_dir": str(tmp_path / "models"),
            "register_default_model": False,
            "port": 0,  # never 11434: a developer's Ollama or `hana serve` may hold it
            **hana_config,
        },
    }


@pytest.fixture
def hana_app(jp_serverapp: Any, run: Run[Any]) -> Any:
    """The started HanaApp (pytest-jupyter runs start_app(), not the extensions' start hooks)."""
    run(jp_serverapp.extension_manager.start_all_extensions())
    return jp_serverapp.web_app.settings["hana_server"]


@pytest.fixture
def tiny_model(jp_fetch: Any, hana_app: Any, tiny_gguf_path: Path, run: Run[Any]) -> str:
    """Model `tiny`, uploaded and created through `{base_url}hana/api/...` with the token."""
    data = tiny_gguf_path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    run(jp_fetch("hana", "api", "blobs", digest, method="POST", body=data))
    body = {"model": "tiny", "files": {"tiny.gguf": digest}, "stream": False}
    response = run(jp_fetch("hana", "api", "create", method="POST", body=json.dumps(body)))
    assert json.loads(response.body) == {"status": "success"}
    return "tiny"
