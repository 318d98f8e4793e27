"""The example notebooks run top to bottom in a real kernel against gemma3:270m."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from server_harness import HanaServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, workdir: Path) -> Any:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{name} is committed with outputs"
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def _text(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(parts)


@pytest.fixture
def kernel_env(hana: HanaServerProcess, gemma: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HANA_URL", hana.url)  # inherited by the kernel nbclient starts
    return hana.url


@pytest.mark.gemma
@pytest.mark.parametrize(
    "name", ["quickstart.ipynb", "parallel_prompts.ipynb", "keep_alive_and_warmup.ipynb"]
)
def test_example_runs(name: str, kernel_env: str, tmp_path: Path) -> None:
    notebook = _run(name, tmp_path)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    streamed = [cell for cell in cells if cell.source.startswith("%%hana")]
    for cell in streamed:
        markdown = [
            o["data"]["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})
        ]
        assert markdown, f"no answer in {cell.source!r}"
        assert all("tokens/s" in text for text in markdown), json.dumps(markdown)[:500]
    if name == "parallel_prompts.ipynb":
        assert len(streamed[0].outputs) == 3 and len(streamed[1].outputs) == 2
    if name == "keep_alive_and_warmup.ipynb":
        ps = next(cell for cell in cells[5:] if cell.source == "%hana ps")
        assert "30 minutes from now" in _text(ps) or "29 minutes from now" in _text(ps)
