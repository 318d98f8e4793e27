"""A real JupyterLab with hana and the built labextension, a tiny model, and headless chromium.

The browser is Debian's chromium (`/usr/bin/chromium`, `make browser` installs it) driven by
Playwright through `executable_path`: Playwright's own browser downloads are not used.
Screenshots go to `.make/lab-e2e/` (HANA_E2E_ARTEFACTS overrides it) and stay after the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_harness import BUILT, MODEL, OTHER_MODEL, ROOT, LabProcess

CHROMIUM = os.environ.get("HANA_CHROMIUM", "/usr/bin/chromium")
ARTEFACTS = Path(os.environ.get("HANA_E2E_ARTEFACTS", ROOT / ".make" / "lab-e2e"))
CHROMIUM_FLAGS = [
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    if not (BUILT / "package.json").exists():
        pytest.fail("labextension/dist is missing: run `make labextension` first")
    server = LabProcess(tmp_path_factory.mktemp("lab-e2e")).start()
    server.create_tiny(OTHER_MODEL, seed=1)
    server.create_tiny(MODEL)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artefacts() -> Path:
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    ARTEFACTS.mkdir(parents=True)
    return ARTEFACTS
