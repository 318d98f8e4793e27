"""The wheel carries the built labextension: installed into a fresh venv, Lab has the sidebar.

Builds the wheel as a release would (`pip wheel`, isolated build), installs it with its
dependencies into a new venv (pip's cache makes that a minute or so), and checks what a user
sees there: `jupyter labextension list` and `jupyter server extension list` report hana enabled
from that venv, and its `jupyter lab` shows the hana status-bar item and sidebar in chromium.
Nothing in the venv comes from this tree except the wheel.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lab_harness import MODEL, ROOT, LabProcess, clean_env
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(900)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str | Path, python: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        env={**clean_env(python), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output[-4000:]
    return output


def test_fresh_venv_from_the_wheel_has_the_extension_enabled(tmp_path: Path, browser: Any) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT)
    (wheel,) = (tmp_path / "dist").glob("hana_jupyter-*.whl")
    prefix = "hana_jupyter-0.1.0.data/data/share/jupyter/labextensions/hana-jupyter/"
    names = zipfile.ZipFile(wheel).namelist()
    assert prefix + "package.json" in names
    assert prefix + "install.json" in names
    assert any(re.fullmatch(re.escape(prefix) + r"static/remoteEntry\.\w+\.js", n) for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", f"{wheel}[lab]", python=python)

    listing = run(venv / "bin" / "jupyter", "labextension", "list", python=python)
    section = listing.split(f"{venv}/share/jupyter/labextensions", 1)
    assert len(section) == 2, listing
    assert re.search(r"hana-jupyter v0\.1\.0 enabled\s+OK \(python, hana-jupyter\)", section[1])
    servers = run(venv / "bin" / "jupyter", "server", "extension", "list", python=python)
    assert re.search(r"hana_server enabled", servers), servers
    assert re.search(r"hana_server 0\.1\.0 OK", servers), servers

    # The venv's own Lab, with only what the wheel installed and enabled.
    lab = LabProcess(tmp_path / "lab", python, installed=True).start()
    try:
        lab.create_tiny(MODEL)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{lab.url}lab?token={lab.token}")
        status = page.locator(".jp-hana-statusbar")
        expect(status).to_have_text("hana: 0 loaded · 0 busy", timeout=60_000)
        status.click()
        row = page.locator(f'#hana-panel .jp-hana-row[data-model="{MODEL}"]')
        expect(row).to_have_attribute("data-state", "unloaded")
        context.close()
    finally:
        lab.stop()
