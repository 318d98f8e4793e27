"""The hana sidebar in a real JupyterLab, driven in headless chromium.

One Lab page for the module, used as a person would: the status-bar item opens the sidebar, Warm
up loads the tiny model, requests make it busy, the keep-alive chooser changes the server's
keep-alive, Unload frees it, and the palette commands do the same from the keyboard. Each test
leaves the model unloaded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lab_harness import MODEL, OTHER_MODEL, LabProcess
from playwright.sync_api import Page, expect
from server_harness import wait_for

pytestmark = pytest.mark.timeout(240)

ROW = f'#hana-panel .jp-hana-row[data-model="{MODEL}"]'
# Row cells keep their words together with no-break spaces: patterns say `\s` for a space.


@pytest.fixture(scope="module")
def page(lab: LabProcess, browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.hana_requests = []  # type: ignore[attr-defined]
    page.on("console", lambda message: print("browser:", message.type, message.text))
    page.on(
        "request",
        lambda request: (
            "/hana/" in request.url and page.hana_requests.append(f"{request.method} {request.url}")
        ),  # type: ignore[attr-defined]
    )
    page.goto(f"{lab.url}lab?token={lab.token}")
    expect(page.locator(".jp-hana-statusbar")).to_have_text(
        "hana: 0 loaded · 0 busy", timeout=60_000
    )
    yield page
    context.close()


@pytest.fixture(autouse=True)
def unloaded_after(lab: LabProcess) -> Iterator[None]:
    yield
    for entry in lab.ps():
        lab.http.post("api/generate", json={"model": entry["name"], "keep_alive": 0})
    wait_for(lambda: not lab.ps(), timeout=30)


def open_panel(page: Page) -> None:
    page.locator(".jp-hana-statusbar").click()
    expect(page.locator("#hana-panel")).to_be_visible()
    expect(page.locator(ROW)).to_have_attribute("data-state", "unloaded")


def warm_up(page: Page) -> None:
    page.locator(f"{ROW} .jp-hana-warm").click()
    expect(page.locator(ROW)).to_have_attribute("data-state", "ready", timeout=30_000)


class Generation:
    """A streaming /api/generate on its own thread, ended by `stop()` (the client leaves)."""

    def __init__(self, lab: LabProcess, num_predict: int) -> None:
        self._stop = threading.Event()
        self.tokens = 0
        self._thread = threading.Thread(target=self._run, args=(lab, num_predict))
        self._thread.start()

    def _run(self, lab: LabProcess, num_predict: int) -> None:
        body = {"model": MODEL, "prompt": "hello", "options": {"num_predict": num_predict}}
        url = f"{lab.url}hana/api/generate"
        with (
            httpx.Client(headers=lab.http.headers, timeout=60) as http,
            http.stream("POST", url, json=body) as response,
        ):
            for _line in response.iter_lines():
                self.tokens += 1
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_status_bar_opens_the_panel_and_warm_up_makes_it_ready(
    page: Page, lab: LabProcess, artefacts: Path
) -> None:
    open_panel(page)
    row = page.locator(ROW)
    expect(row.locator(".jp-hana-unload")).to_be_disabled()
    warm_up(page)
    pid = lab.ps()[0]["pid"]
    expect(row.locator(".jp-hana-badge")).to_have_text("ready")
    expect(row.locator(".jp-hana-runner")).to_contain_text(f"pid {pid}")
    expect(row.locator(".jp-hana-runner")).to_contain_text("ctx 4096")
    expect(row.locator(".jp-hana-timing")).to_have_text(re.compile(r"unloads\sin\s(4m5\ds|5m)"))
    expect(row.locator(".jp-hana-warm")).to_be_disabled()
    expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: 1 loaded · 0 busy")
    page.screenshot(path=artefacts / "lab-ready.png")


def test_busy_while_requests_run(page: Page, lab: LabProcess, artefacts: Path) -> None:
    open_panel(page)
    warm_up(page)
    row = page.locator(ROW)
    # Another model kept warm for 30m, loaded by another program: the sidebar shows it too.
    other = {"model": OTHER_MODEL, "keep_alive": "30m", "stream": False}
    lab.http.post("api/generate", json=other).raise_for_status()
    # The tiny model never stops by itself: these run until the test ends them.
    running = [Generation(lab, 1_000_000) for _ in range(2)]
    try:
        expect(row).to_have_attribute("data-state", "busy", timeout=30_000)
        expect(row.locator(".jp-hana-badge")).to_have_text(
            re.compile(r"busy 2/\d+"), timeout=30_000
        )
        expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: 2 loaded · 1 busy")
        other_row = page.locator(f'#hana-panel .jp-hana-row[data-model="{OTHER_MODEL}"]')
        expect(other_row.locator(".jp-hana-timing")).to_contain_text("unloads in 29m")
        expect(other_row.locator(".jp-hana-keep-alive")).to_have_value("30m")
        expect(row.locator(".jp-hana-timing")).to_contain_text("5m after idle")
        page.screenshot(path=artefacts / "lab-busy.png")
    finally:
        for generation in running:
            generation.stop()
    expect(row).to_have_attribute("data-state", "ready", timeout=30_000)
    expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: 2 loaded · 0 busy")
    # A finished answer reports its speed on the row.
    lab.http.post(
        "api/generate",
        json={"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 16}},
    ).raise_for_status()
    expect(row.locator(".jp-hana-timing")).to_contain_text("tok/s")


def test_keep_alive_chooser_changes_the_servers_keep_alive(page: Page, lab: LabProcess) -> None:
    open_panel(page)
    row = page.locator(ROW)
    # Not loaded: the choice is kept for the next Warm up, which uses it.
    row.locator(".jp-hana-keep-alive").select_option("30m")
    expect(row.locator(".jp-hana-message")).to_have_text("Warm up keeps it 30m")
    assert not lab.ps()
    warm_up(page)
    assert lab.ps()[0]["keep_alive"] == 1800
    expect(row.locator(".jp-hana-timing")).to_have_text(re.compile(r"unloads\sin\s(29m\d+s|30m)"))
    # Loaded: a custom duration applies at once.
    row.locator(".jp-hana-keep-alive").select_option("custom")
    row.locator(".jp-hana-custom").fill("2h")
    row.locator(".jp-hana-custom").press("Enter")
    wait_for(lambda: lab.ps()[0]["keep_alive"] == 7200)
    expect(row.locator(".jp-hana-timing")).to_have_text(re.compile(r"unloads\sin\s(1h59m\d*s?|2h)"))
    # A duration Go would reject is refused on the row; nothing is sent.
    row.locator(".jp-hana-custom").fill("soon")
    row.locator(".jp-hana-custom").press("Enter")
    expect(row.locator(".jp-hana-message")).to_contain_text('invalid duration "soon"')
    assert lab.ps()[0]["keep_alive"] == 7200
    row.locator(".jp-hana-keep-alive").select_option("-1")
    wait_for(lambda: lab.ps()[0]["keep_alive"] == -1)
    expect(row.locator(".jp-hana-timing")).to_have_text("forever")
    expect(row.locator(".jp-hana-message")).to_be_hidden()


def test_unload_makes_it_go(page: Page, lab: LabProcess, artefacts: Path) -> None:
    open_panel(page)
    warm_up(page)
    page.locator(f"{ROW} .jp-hana-unload").click()
    expect(page.locator(ROW)).to_have_attribute("data-state", "unloaded", timeout=30_000)
    expect(page.locator(f"{ROW} .jp-hana-runner")).to_have_text("")
    expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: 0 loaded · 0 busy")
    assert not lab.ps()
    page.screenshot(path=artefacts / "lab-unloaded.png")


def run_command(page: Page, label: str) -> None:
    page.get_by_role("menuitem", name="View").click()
    page.locator(".lm-Menu-item", has_text="Activate Command Palette").click()
    palette = page.locator(".lm-CommandPalette-input")
    expect(palette).to_be_visible()
    palette.fill(label)
    page.locator(".lm-CommandPalette-item", has_text=label).first.click()


def test_palette_commands_warm_up_and_unload_all(page: Page, lab: LabProcess) -> None:
    run_command(page, "hana: Warm Up a Model…")
    dialog = page.locator(".jp-Dialog")
    dialog.locator("select").select_option(MODEL)
    dialog.locator(".jp-mod-accept").click()
    expect(page.locator(ROW)).to_have_attribute("data-state", "ready", timeout=30_000)
    run_command(page, "hana: Unload All Models")
    expect(page.locator(ROW)).to_have_attribute("data-state", "unloaded", timeout=30_000)
    run_command(page, "hana: Open the Model Panel")
    expect(page.locator("#hana-panel")).to_be_visible()


def test_following_the_server_sends_no_requests(page: Page, lab: LabProcess) -> None:
    """Changes made elsewhere arrive on the open event stream: no polling, no tracked calls."""
    open_panel(page)
    page.hana_requests.clear()  # type: ignore[attr-defined]
    shared = lab.shared_url()  # another program, on the shared port
    httpx.post(f"{shared}/api/generate", json={"model": MODEL, "keep_alive": "5m"}, timeout=60)
    expect(page.locator(ROW)).to_have_attribute("data-state", "ready", timeout=30_000)
    httpx.post(f"{shared}/api/generate", json={"model": MODEL, "keep_alive": 0}, timeout=60)
    expect(page.locator(ROW)).to_have_attribute("data-state", "unloaded", timeout=30_000)
    page.wait_for_timeout(2000)  # a poller would show up here
    assert page.hana_requests == []  # type: ignore[attr-defined]


def test_reconnects_when_the_server_comes_back(browser: Any, tmp_path: Path) -> None:
    """The Jupyter server restarts: the sidebar says so, then follows the new one by itself."""
    server = LabProcess(tmp_path).start()
    try:
        server.create_tiny(MODEL)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}lab?token={server.token}")
        open_panel(page)
        status = page.locator("#hana-panel .jp-hana-status")
        server.stop()
        expect(status).to_have_attribute("data-connected", "false", timeout=30_000)
        expect(status).to_contain_text("retrying in")
        expect(page.locator(ROW)).to_have_attribute("data-state", "unknown")
        expect(page.locator(f"{ROW} .jp-hana-warm")).to_be_disabled()
        expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: offline")
        server.launch()
        server.http.post("api/generate", json={"model": MODEL, "stream": False}).raise_for_status()
        # Backoff tops out at 10 s between attempts.
        expect(status).to_have_attribute("data-connected", "true", timeout=30_000)
        expect(page.locator(ROW)).to_have_attribute("data-state", "ready", timeout=30_000)
        expect(page.locator(".jp-hana-statusbar")).to_have_text("hana: 1 loaded · 0 busy")
        context.close()
    finally:
        server.stop()


def test_notebook_7_without_a_status_bar(browser: Any, tmp_path: Path, artefacts: Path) -> None:
    """Notebook 7 has no status bar: the plugin still starts, and the sidebar opens."""
    notebook = LabProcess(tmp_path, app="notebook").start()
    try:
        notebook.create_tiny(MODEL)
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        errors: list[str] = []
        # Only ours: Notebook 7.6 itself throws one settings error on this page.
        page.on(
            "pageerror",
            lambda error: "hana" in (error.stack or "") and errors.append(error.stack),
        )
        with page.expect_console_message(
            lambda m: "hana-jupyter: labextension activated" in m.text
        ):
            page.goto(f"{notebook.url}tree?token={notebook.token}")
        assert page.locator(".jp-hana-statusbar").count() == 0
        run_command(page, "hana: Open the Model Panel")
        row = page.locator(ROW)
        expect(row).to_have_attribute("data-state", "unloaded", timeout=30_000)
        row.locator(".jp-hana-warm").click()
        expect(row).to_have_attribute("data-state", "ready", timeout=30_000)
        page.screenshot(path=artefacts / "notebook7.png")
        assert errors == []
        context.close()
    finally:
        notebook.stop()
