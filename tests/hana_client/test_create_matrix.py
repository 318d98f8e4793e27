"""One Modelfile, one `/api/create` request: the `hana create` CLI, the `%hana create` magic and
the ModelManager resolve local paths on the client side and upload, and all send the same request.
The API's legacy `modelfile` field makes the same model from an installed model's name, and
refuses a FROM path with Ollama's answer (a server never reads files a client names).

The server records the create bodies it receives, so the comparison is of real requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from server_harness import HanaServerProcess, wait_for
from tiny_gguf import write_tiny_gguf
from traitlets.config import Config

from hana_jupyter.manager import ModelManager

HERE = Path(__file__).parent
TAIL = 'PARAMETER num_predict 5\nPARAMETER stop "<end>"\nSYSTEM """Be brief."""\n'


class RecordingServer(HanaServerProcess):
    command = (str(HERE / "recording_serve.py"),)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingServer, Path]]:
    """A recording server whose working directory is the folder of the Modelfiles (so a legacy
    `modelfile` with a relative FROM path would find the file, were paths read), with `base:1`
    installed."""
    root = tmp_path_factory.mktemp("create-matrix")
    record = root / "record.jsonl"
    server = RecordingServer(
        root / "models", root / "server.log", cwd=root, HANA_RECORD=str(record)
    )
    (root / "weights").mkdir()
    write_tiny_gguf(root / "weights" / "tiny.gguf", seed=5)
    server.start()
    try:
        server.create_tiny("base:1", root, seed=3)
        yield server, record
    finally:
        server.stop()


FROM_FORMS = {
    "file": lambda root: str(root / "weights" / "tiny.gguf"),
    "directory": lambda root: str(root / "weights"),
    "model name": lambda root: "base:1",
    "relative path": lambda root: "./weights/tiny.gguf",
}


def _records(record: Path) -> list[dict[str, Any]]:
    lines = record.read_text().splitlines() if record.exists() else []
    return [json.loads(line) for line in lines]


def _cli_create(server: HanaServerProcess, name: str, modelfile: Path) -> None:
    env = {**os.environ, "HANA_URL": server.url}
    done = subprocess.run(
        [sys.executable, "-m", "hana_server.cli", "create", name, "-f", str(modelfile)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("success")


def _magic_create(server: HanaServerProcess, name: str, modelfile: Path) -> None:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.HanaMagics.url = server.url
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_line_magic("load_ext", "hana_jupyter")
        shell.run_line_magic("hana", f"create {name} {modelfile}")
        magics = shell.magics_manager.registry["HanaMagics"]
        magics.manager.client.close()
        shell.run_line_magic("unload_ext", "hana_jupyter")
    finally:
        InteractiveShell.clear_instance()


def _without_model(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "model"}


@pytest.mark.parametrize("form", list(FROM_FORMS))
def test_same_modelfile_same_request(recorded: tuple[RecordingServer, Path], form: str) -> None:
    server, record = recorded
    root = server.cwd
    assert root is not None
    modelfile = root / f"Modelfile-{form.replace(' ', '-')}"
    text = f"FROM {FROM_FORMS[form](root)}\n{TAIL}"
    modelfile.write_text(text)
    slug = form.replace(" ", "-")

    _cli_create(server, f"cli-{slug}", modelfile)
    _magic_create(server, f"magic-{slug}", modelfile)
    manager = ModelManager(url=server.url)
    try:
        assert manager.create(f"mgr-{slug}", modelfile)["status"] == "success"
    finally:
        manager.client.close()
    legacy = server.http.post(
        "/api/create", json={"model": f"api-{slug}", "modelfile": text, "stream": False}
    )
    kinds = ("cli", "magic", "mgr", "api") if form == "model name" else ("cli", "magic", "mgr")
    if form == "model name":
        assert legacy.status_code == 200, legacy.text
    else:  # a path over HTTP: Ollama's answer, whatever is (or is not) at that path
        assert legacy.status_code == 400
        assert legacy.json() == {"error": "neither 'from' or 'files' was specified"}

    # The server records a request when it has answered it: the last line may lag a moment.
    names = {f"{kind}-{slug}" for kind in kinds}
    wait_for(lambda: names <= {body["model"] for body in _records(record)})
    bodies = {body["model"]: body for body in _records(record)}
    cli, magic, mgr = (bodies[f"{kind}-{slug}"] for kind in ("cli", "magic", "mgr"))
    assert _without_model(cli) == _without_model(magic) == _without_model(mgr)
    if form == "model name":
        assert cli["from"] == "base:1" and "files" not in cli
    else:
        assert cli["files"] == {"tiny.gguf": mgr["files"]["tiny.gguf"]} and "from" not in cli
    assert cli["parameters"] == {"num_predict": 5, "stop": ["<end>"]}

    # The legacy field is translated by the server itself: the model it makes is the same one.
    models = {m["name"]: m["digest"] for m in server.http.get("/api/tags").json()["models"]}
    assert f"api-{slug}:latest" in models or form != "model name"
    digests = {models[f"{kind}-{slug}:latest"] for kind in kinds}
    assert len(digests) == 1
