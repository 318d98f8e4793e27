"""Pulling from the kernel side, against the loopback registry: `%hana pull` draws widget bars,
`%%hana` and the manager pull a missing model first and then answer (or do not, when told not
to), and interrupting a cell cancels its pull while the server keeps the partial download."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from ipywidgets import FloatProgress
from ipywidgets.widgets.widget import _instances as live_widgets
from kernel_side import BIG, big_model
from nbclient import NotebookClient
from registry_server import LoopbackRegistry, build_model
from server_harness import HanaServerProcess, wait_for

from hana_jupyter.magics import HanaInterrupt, HanaMagicError
from hana_jupyter.manager import ModelManager
from hana_protocol.errors import ModelNotFound

MID_WAY = re.compile(r"pulling [0-9a-f]{12}: +[1-9]\d?%\|")  # a bar between 1% and 99%


def _outputs(ip: InteractiveShell) -> list[dict[str, Any]]:
    return list(ip.display_pub.outputs)


def _installed(hana: HanaServerProcess) -> list[str]:
    return [m["name"] for m in hana.http.get("/api/tags").json()["models"]]


@pytest.fixture
def remove_pulled(hana: HanaServerProcess) -> Iterator[list[str]]:
    """Names to delete from the session's server after the test."""
    names: list[str] = []
    yield names
    for name in names:
        hana.http.request("DELETE", "/api/delete", json={"model": name})


@pytest.fixture
def brief(registry: LoopbackRegistry, tiny_gguf_path: Path, remove_pulled: list[str]) -> str:
    """The name of a runnable tiny model on the loopback registry (deleted after the test)."""
    registry.add("brief", build_model(tiny_gguf_path))
    remove_pulled.append(registry.name("brief"))
    return registry.name("brief")


def test_pull_magic_draws_widget_bars(
    hana: HanaServerProcess,
    shell: InteractiveShell,
    registry: LoopbackRegistry,
    remove_pulled: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = registry.name("tiny")
    remove_pulled.append(name)
    shell.run_line_magic("hana", f"pull {name} --insecure")
    assert name in _installed(hana)
    (model,) = registry.models.values()
    widgets = [
        live_widgets[o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]]
        for o in _outputs(shell)
        if "application/vnd.jupyter.widget-view+json" in o["data"]
    ]
    assert len(widgets) == len(model.layers) + 1  # one bar per layer and the config
    hexes = [layer["digest"].removeprefix("sha256:")[:12] for layer in model.layers]
    for container, hex12 in zip(widgets, hexes, strict=False):
        label, bar, meter = container.children
        # tqdm's widget text spaces with U+2007 (a digit-wide space)
        assert label.value.replace("\u2007", " ") == f"pulling {hex12}: 100%"
        assert isinstance(bar, FloatProgress) and bar.value == bar.max > 0
        assert bar.bar_style == "success"
        assert "B/s]" in meter.value.replace("\u2007", " "), meter.value
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["pulling manifest", "verifying sha256 digest", "writing manifest", "success"]


def test_cell_pulls_a_missing_model_then_answers(
    hana: HanaServerProcess,
    shell: InteractiveShell,
    brief: str,
) -> None:
    name = brief
    shell.run_cell_magic("hana", f"{name} --insecure -n 5 -o answer", "Hello")
    outputs = _outputs(shell)
    assert len({o["display_id"] for o in outputs}) == 1  # the pull and the answer share one output
    final = outputs[-1]["data"]["text/plain"]
    assert "5 tokens" in final and " · pulled " in final
    assert shell.user_ns["answer"]
    assert name in _installed(hana)


def test_cell_shows_the_pull_and_an_interrupt_cancels_it(
    hana: HanaServerProcess,
    shell: InteractiveShell,
    registry: LoopbackRegistry,
    tmp_path: Path,
    remove_pulled: list[str],
) -> None:
    model = big_model(registry, tmp_path)
    weights = model.blob("model")
    registry.hold(weights.digest, after=9_000_000)
    name = registry.name("big")
    seen: list[str] = []

    def interrupt_mid_pull() -> None:
        registry.wait_held()

        def showing_progress() -> bool:
            seen[:] = [o["data"]["text/plain"] for o in _outputs(shell)]
            return any(MID_WAY.search(text) for text in seen)

        wait_for(showing_progress, timeout=20)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_mid_pull)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("hana", f"{name} --insecure", "Hello")
    interrupter.join()
    mid = next(text for text in seen if MID_WAY.search(text))
    hex12 = weights.digest.removeprefix("sha256:")[:12]
    assert f"pulling {name}…" in mid and f"pulling {hex12}:  " in mid
    assert f"/{BIG / 1e6:.1f}M [" in mid and "B/s]" in mid  # done/total [elapsed<left, rate]
    assert "⏹ interrupted" in _outputs(shell)[-1]["data"]["text/plain"]
    # The server saw the stream close: no pull left running, the model is not there.
    wait_for(lambda: not hana.http.get("/api/hana/status").json()["pulls"], timeout=10)
    assert name not in _installed(hana)

    registry.release()  # the next pull resumes where the first one stopped
    served = registry.served(weights.digest)
    remove_pulled.append(name)
    shell.run_line_magic("hana", f"pull {name} --insecure")
    assert name in _installed(hana)
    assert registry.served(weights.digest) - served < BIG - 8_000_000  # only the rest


def test_failed_pull_is_one_line(
    shell: InteractiveShell, registry: LoopbackRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.name("absent")
    result = shell.run_cell(f"%%hana {name} --insecure\nHello")
    assert isinstance(result.error_in_exec, HanaMagicError)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines == [f"hana: pulling {name} failed: pull model manifest: file does not exist"]


def test_manager_pulls_first_unless_told_not_to(
    hana: HanaServerProcess,
    registry: LoopbackRegistry,
    brief: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = brief
    mgr = ModelManager(url=hana.url, insecure=True, pull_missing=False)
    try:
        with pytest.raises(ModelNotFound):
            mgr.generate(name, "Hello", options={"num_predict": 3})
        assert registry.served() == 0
        mgr.pull_missing = True
        answer = mgr.chat(name, [{"role": "user", "content": "Hi"}], options={"num_predict": 3})
    finally:
        mgr.client.close()
    assert answer.eval_count == 3
    captured = capsys.readouterr()
    assert "pulling manifest" in captured.out and "success" in captured.out
    assert "100%|" in captured.err  # text bars outside a notebook


def test_notebook_pulls_on_first_use(
    hana: HanaServerProcess,
    registry: LoopbackRegistry,
    brief: str,
    remove_pulled: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A real kernel run by nbclient: `%%hana` on a model the server lacks pulls it from the
    loopback registry and answers in the same output; `%hana pull` leaves finished widget bars."""
    tiny = registry.name("tiny")
    remove_pulled.append(tiny)
    monkeypatch.setenv("HANA_URL", hana.url)  # inherited by the kernel nbclient starts
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext hana_jupyter"),
        nbformat.v4.new_code_cell(f"%%hana {brief} --insecure -n 5\nHello"),
        nbformat.v4.new_code_cell(f"%hana pull {tiny} --insecure"),
    ]
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    answer = notebook.cells[1].outputs
    assert len(answer) == 1  # the pull's progress was replaced by the answer
    assert "5 tokens" in answer[0]["data"]["text/markdown"]
    assert " · pulled " in answer[0]["data"]["text/markdown"]
    assert set(_installed(hana)) >= {brief, tiny}

    views = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in notebook.cells[2].outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (model,) = [m for key, m in registry.models.items() if key[1] == "tiny"]
    assert len(views) == len(model.layers) + 1
    for view in views:
        bar_id = state[view]["state"]["children"][1].removeprefix("IPY_MODEL_")
        bar = state[bar_id]["state"]
        assert bar["value"] == bar["max"] > 0 and bar["bar_style"] == "success"
    texts = [o.get("text", "") for o in notebook.cells[2].outputs]
    assert "".join(texts).splitlines()[-1] == "success"


async def test_async_generate_pulls_first_too(
    hana: HanaServerProcess,
    brief: str,
) -> None:
    name = brief
    mgr = ModelManager(url=hana.url, insecure=True)
    try:
        answer = await mgr.async_generate(name, "Hello", options={"num_predict": 2})
    finally:
        await mgr.client.async_close()
    assert answer.eval_count == 2 and name in _installed(hana)


def test_interrupting_pull_magic_is_one_line(
    hana: HanaServerProcess, shell: InteractiveShell, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    weights = big_model(registry, tmp_path).blob("model")
    registry.hold(weights.digest, after=9_000_000)
    name = registry.name("big")

    def interrupt_when_held() -> None:
        registry.wait_held()
        wait_for(lambda: hana.http.get("/api/hana/status").json()["pulls"], timeout=10)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_held)
    interrupter.start()
    result = shell.run_cell(f"%hana pull {name} --insecure")
    interrupter.join()
    assert isinstance(result.error_in_exec, HanaInterrupt)
    assert result.error_in_exec._render_traceback_() == [
        "hana: interrupted; the pull was canceled; pulling again resumes it"
    ]
    wait_for(lambda: not hana.http.get("/api/hana/status").json()["pulls"], timeout=10)
    assert name not in _installed(hana)
