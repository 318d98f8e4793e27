"""`hana pull` and `hana run` on a missing model, against the loopback registry, as a user types
them: bars per layer on stderr, then Ollama's statuses; `run` pulls first, then answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from registry_server import LoopbackRegistry, build_model
from server_harness import HanaServerProcess
from test_cli import hana


def drawn(server: HanaServerProcess, *args: str) -> tuple[int, list[str]]:
    """Run `hana ARGS`; its exit code and the stderr lines as a terminal leaves them (tqdm redraws
    a bar in place after a carriage return: the last drawing stays)."""
    env = {**os.environ, "HANA_HOST": server.url.removeprefix("http://")}
    env.pop("HANA_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "hana_server.cli", *args], env=env, capture_output=True, timeout=120
    )
    lines = done.stderr.decode().split("\n")  # bytes: text mode would turn "\r" into "\n"
    return done.returncode, [line.rsplit("\r", 1)[-1] for line in lines if line.strip()]


def _layers(registry: LoopbackRegistry) -> list[str]:
    (model,) = registry.models.values()
    manifest = json.loads(model.manifest)
    return [layer["digest"] for layer in [*manifest["layers"], manifest["config"]]]


def test_pull_draws_a_bar_per_layer(server: HanaServerProcess, registry: LoopbackRegistry) -> None:
    name = registry.name("tiny")
    code, lines = drawn(server, "pull", name, "--insecure")
    assert code == 0, lines
    assert lines[0] == "pulling manifest"
    assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    bars = lines[1:-3]
    hexes = [digest.removeprefix("sha256:")[:12] for digest in _layers(registry)]
    assert [bar.split(":")[0] for bar in bars] == [f"pulling {h}" for h in hexes]
    (model,) = registry.models.values()
    size = model.blob("model").size
    assert f"{size / 1000:.0f}k/{size / 1000:.0f}k" in bars[0], bars  # decimal sizes, as Ollama
    assert all("100%|" in bar and "B/s]" in bar for bar in bars), bars  # size, ETA, rate
    assert name in hana(server, "list").stdout

    again = hana(server, "pull", name, "--insecure")  # present: nothing downloads
    assert again.returncode == 0 and again.stderr.rstrip().endswith("success")
    hana(server, "rm", name)


def test_run_pulls_a_missing_model_then_answers(
    server: HanaServerProcess, registry: LoopbackRegistry, tiny_gguf_path: Path
) -> None:
    # The tiny model never stops by itself: its params layer keeps answers short.
    registry.add("brief", build_model(tiny_gguf_path, params={"num_predict": 5}))
    name = registry.name("brief")
    ran = hana(server, "run", "--insecure", name, "hello", "--verbose")
    assert ran.returncode == 0, ran.stderr
    assert "pulling manifest" in ran.stderr and "success" in ran.stderr
    assert ran.stdout.strip()  # the answer
    assert "eval count:           5 token(s)" in ran.stderr
    before = registry.served()
    ran = hana(server, "run", "--insecure", name, "hello")  # present now: no pull
    assert ran.returncode == 0 and "pulling manifest" not in ran.stderr
    assert registry.served() == before
    hana(server, "rm", name)


def test_pull_errors_are_one_line(server: HanaServerProcess, registry: LoopbackRegistry) -> None:
    missing = hana(server, "pull", registry.name("absent"), "--insecure")
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert last == "Error: pull model manifest: file does not exist", missing.stderr
    assert "Traceback" not in missing.stderr
    bad = hana(server, "pull", "a b")
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: invalid model name"
