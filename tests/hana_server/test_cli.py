"""The `hana` command talks to a running server like the `ollama` CLI does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server_harness import HanaServerProcess, wait_for
from tiny_gguf import write_tiny_gguf


def hana(
    server: HanaServerProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HANA_HOST": server.url.removeprefix("http://")}
    env.pop("HANA_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "hana_server.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_create_list_show_run_ps_stop_rm(server: HanaServerProcess, tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "weights.gguf", seed=7)
    (tmp_path / "Modelfile").write_text(
        'FROM ./weights.gguf\nPARAMETER num_predict 5\nSYSTEM """Be brief."""\n'
    )
    created = hana(server, "create", "cli-model", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().endswith("success")

    listed = hana(server, "list").stdout
    assert listed.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert "cli-model:latest" in listed

    shown = hana(server, "show", "cli-model").stdout
    assert "llama" in shown and "num_predict" in shown
    assert "Be brief." in hana(server, "show", "cli-model", "--system").stdout

    ran = hana(server, "run", "cli-model", "hello", "--verbose")
    assert ran.returncode == 0, ran.stderr
    assert "eval count:           5 token(s)" in ran.stderr

    assert "cli-model:latest" in hana(server, "ps").stdout
    assert hana(server, "stop", "cli-model").returncode == 0
    wait_for(lambda: "cli-model" not in hana(server, "ps").stdout)

    assert hana(server, "rm", "cli-model").returncode == 0
    assert "cli-model" not in hana(server, "list").stdout


def test_errors_are_one_line(server: HanaServerProcess) -> None:
    # (`run` would pull a missing model first: test_cli_pull.py; `show` only looks.)
    missing = hana(server, "show", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: model 'nope' not found"


def test_unreachable_server_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "HANA_HOST": "127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "hana_server.cli", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "could not connect to hana" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_ps_import_nothing_heavy() -> None:
    # `hana ps` is a quick look; it must not pay for the server, the store or numpy.
    probe = (
        "import sys\n"
        "from hana_server.cli import main\n"
        "for argv in (['--version'], ['ps']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('numpy', 'gguf', 'llama_cpp', 'hana_server.scheduler', 'hana_server.store',\n"
        "         'hana_server.service', 'hana_server.config')\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    env = {**os.environ, "HANA_HOST": "127.0.0.1:9"}
    env.pop("HANA_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "could not connect to hana" in result.stderr  # ps really ran
