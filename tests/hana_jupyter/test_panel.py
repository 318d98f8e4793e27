"""The runner panel against a real `hana serve` with tiny models: rows follow loads, busy periods,
unloads and keep-alive changes from the server's event stream; one thread writes the widgets; a
real ipykernel 7 keeps sending updates while another cell is busy."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kernel_side import big_model
from registry_server import LoopbackRegistry
from server_harness import HanaServerProcess, wait_for
from traitlets import All

from hana_client import HanaClient
from hana_client.streams import read_events
from hana_jupyter.panel_row import ModelRow, keep_alive_choice
from hana_jupyter.runner_panel import HanaPanel

A = "tiny:a"
B = "tiny:b"


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HanaServerProcess]:
    """A server of its own (these tests load and unload models), two requests per runner."""
    root = tmp_path_factory.mktemp("panel")
    proc = HanaServerProcess(root / "models", root / "server.log", HANA_NUM_PARALLEL="2").start()
    proc.create_tiny(A, root, seed=1)
    proc.create_tiny(B, root, seed=2)
    yield proc
    proc.stop()


@pytest.fixture
def make_panel(server: HanaServerProcess) -> Iterator[Callable[..., HanaPanel]]:
    """Panels on the test server, closed after the test; every model unloaded before and after."""
    panels: list[HanaPanel] = []
    clients: list[HanaClient] = []

    def make(url: str | None = None, **traits: Any) -> HanaPanel:
        client = HanaClient(url=url or server.url)
        clients.append(client)
        panel = HanaPanel(client, throttle=0.02, **traits)
        panels.append(panel)
        return panel

    unload_all(server)
    yield make
    for panel in panels:
        panel.close()
    for client in clients:
        client.close()
    unload_all(server)


def unload_all(server: HanaServerProcess) -> None:
    for entry in server.ps():
        generate(server, entry["name"], keep_alive=0)
    wait_for(lambda: not server.ps(), 30)


def generate(server: HanaServerProcess, model: str, prompt: str = "", **fields: Any) -> None:
    body = {"model": model, "prompt": prompt, "stream": False, **fields}
    response = server.http.post("/api/generate", json=body)
    assert response.status_code == 200, response.text


class Streams:
    """Generations held open on their own threads (another notebook, another cell) until `stop`."""

    def __init__(self, server: HanaServerProcess) -> None:
        self.server = server
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []
        self.chunks = 0

    def start(self, model: str, count: int = 1) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._run, args=(model,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, model: str) -> None:
        body = {"model": model, "prompt": "hello", "options": {"num_predict": 100_000}}
        with httpx.stream("POST", f"{self.server.url}/api/generate", json=body, timeout=60) as r:
            for _line in r.iter_lines():
                self.chunks += 1
                if self.done.is_set():
                    return  # leaving the stream frees the slot

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def streams(server: HanaServerProcess) -> Iterator[Streams]:
    held = Streams(server)
    yield held
    held.stop()


def record(widget: Any, name: str) -> list[Any]:
    """Every value `widget.name` takes from now on."""
    values: list[Any] = []
    widget.observe(lambda change: values.append(change["new"]), name)
    return values


def row(panel: HanaPanel, model: str) -> ModelRow:
    return wait_for(lambda: panel.rows.get(model), 15)


# --------------------------------------------------------------------------------------------------
# rows follow the server


def test_rows_list_installed_models(server: HanaServerProcess, make_panel: Callable) -> None:
    panel = make_panel()
    wait_for(lambda: panel.connected and "CPUs" in panel.status)
    assert set(panel.rows) == {A, B}
    assert panel.url == f"{server.url}/"
    assert {r.state for r in panel.rows.values()} == {"unloaded"}
    first = panel.rows[A]
    assert first.warm_button.disabled is False and first.unload_button.disabled is True
    assert first.countdown == "" and first.pid is None


def test_warm_up_shows_loading_then_ready(server: HanaServerProcess, make_panel: Callable) -> None:
    panel = make_panel()
    a = row(panel, A)
    wait_for(lambda: a.state == "unloaded")
    states = record(a, "state")

    a.warm_button.click()
    wait_for(lambda: a.state == "ready", 60)
    assert states.index("loading") < states.index("ready")
    entry = server.ps()[0]
    assert (a.pid, a.port, a.size, a.context_length) == (
        entry["pid"],
        entry["port"],
        entry["size"],
        entry["context_length"],
    )
    assert a.runner_label.value == f"pid {entry['pid']} · :{entry['port']}"
    assert a.keep_alive == 300 and a.keep_alive_chooser.value == "5m"
    assert a.countdown.startswith("unloads in 4m") or a.countdown == "unloads in 5m"
    assert a.warm_button.disabled and not a.unload_button.disabled
    # Loaded models come first.
    assert panel._rows_box.children[0] is a


def test_busy_period_counts_requests_and_queue(
    server: HanaServerProcess, make_panel: Callable, streams: Streams
) -> None:
    panel = make_panel()
    a = row(panel, A)
    generate(server, A)  # loaded by someone else: the panel learns it from the stream
    wait_for(lambda: a.state == "ready", 30)

    streams.start(A, 2)
    wait_for(lambda: a.state == "busy" and a.in_flight == 2, 30)
    assert "busy 2/2" in a.badge.value
    assert a.countdown == "5m after idle"  # the timer starts when the last request ends
    streams.start(A, 1)  # a third request waits for a slot
    wait_for(lambda: a.queued == 1, 30)
    assert "busy 2/2 · queued 1" in a.badge.value
    assert "1 queued" in panel.status

    streams.stop()
    wait_for(lambda: a.state == "ready" and a.in_flight == 0 and a.queued == 0, 30)
    generate(server, A, "hi", options={"num_predict": 4})
    wait_for(lambda: a.tokens_per_second, 30)
    assert a.speed_label.value.endswith("tok/s")


def test_keep_alive_chooser_applies_at_once(
    server: HanaServerProcess, make_panel: Callable
) -> None:
    panel = make_panel()
    a = row(panel, A)
    generate(server, A)
    wait_for(lambda: a.state == "ready", 30)

    a.keep_alive_chooser.value = "30m"
    wait_for(lambda: a.keep_alive == 1800, 30)
    assert server.ps()[0]["keep_alive"] == 1800
    wait_for(lambda: a.countdown.startswith("unloads in 29m") or a.countdown == "unloads in 30m")

    a.keep_alive_chooser.value = "-1"
    wait_for(lambda: a.countdown == "forever", 30)
    assert server.ps()[0]["keep_alive"] == -1

    a.keep_alive_chooser.value = "custom"
    wait_for(lambda: a.custom_keep_alive.layout.display == "")
    a.custom_keep_alive.value = "90s"
    wait_for(lambda: a.keep_alive == 90, 30)
    assert a.countdown.startswith("unloads in 1m")

    a.custom_keep_alive.value = "soon"
    wait_for(lambda: "keep-alive 'soon'" in a.error)
    assert server.ps()[0]["keep_alive"] == 90


def test_keep_alive_of_an_unloaded_model_waits_for_warm_up(
    server: HanaServerProcess, make_panel: Callable
) -> None:
    panel = make_panel()
    b = row(panel, B)
    wait_for(lambda: b.state == "unloaded")
    b.keep_alive_chooser.value = "1h"
    wait_for(lambda: b.note == "Warm up keeps it 1h")
    assert server.ps() == []  # choosing did not load it
    b.warm_button.click()
    wait_for(lambda: b.state == "ready" and b.keep_alive == 3600, 60)


def test_an_unloading_runner_does_not_reset_the_chosen_keep_alive() -> None:
    # While it unloads, the server reports keep_alive 0; following it would make the next
    # Warm up send "0s" and unload the model at once.
    row_ = ModelRow(
        "m:latest",
        on_warm=lambda _row: None,
        on_unload=lambda _row: None,
        on_keep_alive=lambda _row: None,
        default_keep_alive=300,
    )
    now = datetime.now(UTC)
    entry = {"state": "ready", "keep_alive": 1800, "num_parallel": 1}
    row_.show(entry, 0, now)
    assert row_.keep_alive_chooser.value == "30m"
    row_.show({**entry, "state": "expiring", "keep_alive": 0}, 0, now)
    row_.show(None, 0, now)
    assert row_.keep_alive_chooser.value == "30m" and row_.chosen_keep_alive == "30m"


def test_unload_button(server: HanaServerProcess, make_panel: Callable) -> None:
    panel = make_panel()
    a = row(panel, A)
    generate(server, A)
    wait_for(lambda: a.state == "ready", 30)
    a.unload_button.click()
    wait_for(lambda: a.state == "unloaded", 30)
    assert server.ps() == []
    assert a.pid is None and a.countdown == "" and a.runner_label.value == ""
    assert not a.warm_button.disabled and a.unload_button.disabled


def test_panels_show_the_same_truth(server: HanaServerProcess, make_panel: Callable) -> None:
    first, second = make_panel(), make_panel()
    row(first, A).warm_button.click()
    for panel in (first, second):
        wait_for(lambda panel=panel: panel.rows[A].state == "ready", 60)
    generate(server, A, keep_alive="1h")  # a third client changes it
    for panel in (first, second):
        wait_for(lambda panel=panel: panel.rows[A].keep_alive == 3600, 30)
        assert panel.rows[A].keep_alive_chooser.value == "1h"


def test_countdown_ticks_without_server_traffic(
    server: HanaServerProcess, make_panel: Callable
) -> None:
    panel = make_panel()
    a = row(panel, A)
    generate(server, A)
    wait_for(lambda: a.state == "ready" and a.countdown.startswith("unloads in"), 30)
    events = panel.events_received
    seen = record(a, "countdown")
    wait_for(lambda: len(set(seen)) >= 2, 10)
    assert panel.events_received == events


# --------------------------------------------------------------------------------------------------
# threads, reconnects, closing


def test_only_the_loop_thread_writes_widgets_while_a_generation_streams(
    server: HanaServerProcess, make_panel: Callable, streams: Streams
) -> None:
    panel = make_panel()
    a = row(panel, A)
    wait_for(lambda: a.state == "unloaded")
    writers: list[tuple[str, int]] = []

    def watch(widget: Any) -> None:
        widget.observe(lambda c: writers.append((c["name"], threading.get_ident())), names=All)
        for child in getattr(widget, "children", ()):
            watch(child)

    watch(panel)
    a.warm_button.click()  # a click arrives on a comm thread; here the test's own thread
    wait_for(lambda: a.state == "ready", 60)
    streams.start(A, 1)
    wait_for(lambda: a.state == "busy", 30)
    panel.refresh()
    chunks = streams.chunks
    wait_for(lambda: streams.chunks > chunks + 3, 30)  # the generation is streaming meanwhile
    streams.stop()
    wait_for(lambda: a.state == "ready", 30)

    loop_thread = panel._loop_thread_id
    assert writers
    assert {ident for _, ident in writers} == {loop_thread}
    assert loop_thread != threading.get_ident()


def test_unreachable_server_then_reconnect(
    tmp_path: Path, make_panel: Callable, start_own_server: Callable[..., HanaServerProcess]
) -> None:
    first = start_own_server()
    panel = make_panel(first.url, retry_delay=0.1, max_retry_delay=0.5)
    a = row(panel, A)
    wait_for(lambda: a.state == "unloaded")

    first.stop()
    wait_for(lambda: not panel.connected and "server unreachable" in panel.status, 30)
    assert "retrying" in panel.status
    wait_for(lambda: a.state == "unknown")
    assert a.warm_button.disabled and a.unload_button.disabled

    start_own_server(port=first.port)  # back on the same address
    wait_for(lambda: panel.connected and a.state == "unloaded", 60)
    assert "unreachable" not in panel.status


def test_a_model_being_pulled_shows_its_percentage(
    server: HanaServerProcess, make_panel: Callable, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    weights = big_model(registry, tmp_path).blob("model")
    name = registry.name("big")
    registry.hold(weights.digest, after=9_000_000)
    panel = make_panel()
    wait_for(lambda: panel.connected)
    pulling = threading.Thread(
        target=lambda: server.http.post("/api/pull", json={"model": name, "insecure": True})
    )
    pulling.start()
    try:
        big = row(panel, name)  # a row appears for a model that is not installed yet

        def shows_its_progress() -> bool:
            # Progress moves until the hold: read each value once, compare them together.
            progress = big.pull_progress
            return (
                progress is not None
                and 0.5 < progress < 1
                and f"pulling {progress:.0%}" in big.badge.value
                and big.progress.value == progress
            )

        wait_for(shows_its_progress, 60)  # held after 9 of 12 MB
        assert big.state == "pulling" and big.badge.value.count("pulling ") == 1
        assert big.progress.layout.display == ""
        assert re.fullmatch(r"\d+ MB / 12 MB", big.runner_label.value)
        assert big.warm_button.disabled and big.unload_button.disabled
        assert "1 pulling" in panel.status
        # A panel opened mid-pull shows it too (from /api/hana/status).
        late = make_panel()
        wait_for(lambda: (late.rows.get(name) is not None) and late.rows[name].state == "pulling")
    finally:
        registry.release()
        pulling.join(60)
    wait_for(lambda: big.state == "unloaded" and big.pull_progress is None, 20)
    assert name in panel.rows  # installed now: the row stays
    assert not big.warm_button.disabled
    server.http.request("DELETE", "/api/delete", json={"model": name})


def test_close_stops_following(server: HanaServerProcess, make_panel: Callable) -> None:
    closed, witness = make_panel(), make_panel()
    wait_for(lambda: closed.connected and witness.connected)
    closed.close()
    assert closed.running is False and closed.connected is False
    assert not closed._tasks
    received = closed.events_received
    witness_received = witness.events_received
    generate(server, A)  # the server publishes load events to every follower
    wait_for(lambda: witness.events_received > witness_received, 30)
    assert closed.events_received == received
    assert all(child.comm is None for child in closed.children)


@pytest.fixture
def start_own_server(tmp_path: Path) -> Iterator[Callable[..., HanaServerProcess]]:
    """Servers on one store, optionally on a given port (to come back where one went away)."""
    started: list[HanaServerProcess] = []

    def start(port: int | None = None) -> HanaServerProcess:
        proc = HanaServerProcess(tmp_path / "models", tmp_path / "server.log")
        if port is not None:
            proc.port, proc.url = port, f"http://127.0.0.1:{port}"
            proc.env["HANA_HOST"] = f"127.0.0.1:{port}"
            proc.http.close()
            proc.http = httpx.Client(base_url=proc.url, timeout=httpx.Timeout(60.0))
        proc.start()
        started.append(proc)
        if port is None:
            proc.create_tiny(A, tmp_path, seed=1)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_panel_magic(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`%hana panel` gives a panel on the magics' own client (same server, same token)."""
    magics = shell.magics_manager.registry["HanaMagics"]
    panel = shell.run_line_magic("hana", "panel")
    try:
        assert isinstance(panel, HanaPanel)
        assert panel.client is magics.manager.client
        wait_for(lambda: {"tiny:a", "tiny:b"} <= set(panel.rows), 30)
    finally:
        panel.close()
    shell.run_line_magic("hana", "help")
    assert "%hana panel" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# in a real kernel


def test_updates_flow_while_another_cell_is_busy(server: HanaServerProcess, tmp_path: Path) -> None:
    """ipykernel 7: the panel's thread sends comm updates while the kernel runs another cell."""
    from jupyter_client.manager import start_new_kernel

    release = tmp_path / "release"
    env = {**os.environ, "HANA_URL": server.url}
    manager, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        execute(kc, "import hana_jupyter\npanel = hana_jupyter.panel()\ndisplay(panel)")
        busy_cell = (
            "import time, pathlib\n"
            "from hana_jupyter import HanaClient\n"
            "chunks = HanaClient().stream_generate("
            f"{A!r}, 'hello', options={{'num_predict': 100000}})\n"
            "next(chunks)\n"  # the request holds a slot on the runner now
            f"while not pathlib.Path({str(release)!r}).exists():\n"
            "    time.sleep(0.05)\n"
            "chunks.close()\n"
        )
        msg_id = kc.execute(busy_cell)
        seen_busy = False
        while not seen_busy:
            message = kc.get_iopub_msg(timeout=60)
            if message["msg_type"] == "error":
                raise AssertionError(message["content"]["traceback"])
            if message["msg_type"] == "comm_msg":
                state = message["content"]["data"].get("state", {})
                seen_busy = "busy 1/2" in str(state.get("value", ""))
        # The cell is still running: it ends only when released.
        assert not _reply_arrived(kc, msg_id)
        release.touch()
        reply = kc.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok"
        execute(kc, "panel.close()\nassert not panel.running")
    finally:
        release.touch()
        kc.stop_channels()
        manager.shutdown_kernel(now=True)


def _reply_arrived(kc: Any, msg_id: str) -> bool:
    try:
        reply = kc.get_shell_msg(timeout=0.01)
    except queue.Empty:
        return False
    assert reply["parent_header"]["msg_id"] == msg_id
    return True


def execute(kc: Any, code: str) -> None:
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda _msg: None)
    assert reply["content"]["status"] == "ok", reply["content"]


# --------------------------------------------------------------------------------------------------
# pieces


def test_event_stream_decoding() -> None:
    lines = [
        ": keep-alive",
        "",
        "event: state",
        'data: {"event": "state",',
        'data: "models": []}',
        "",
        "event: unloaded",
        'data: {"event": "unloaded", "model": "tiny:a"}',
        "",
    ]

    async def collect() -> list[dict[str, Any]]:
        async def source() -> Any:
            for line in lines:
                yield line

        return [event async for event in read_events(source())]

    assert asyncio.run(collect()) == [
        {"event": "state", "models": []},
        {"event": "unloaded", "model": "tiny:a"},
    ]
    assert json.dumps(keep_alive_choice(300)) == '["5m", ""]'
    assert keep_alive_choice(-1) == ("-1", "")
    assert keep_alive_choice(5400) == ("custom", "1h30m")
