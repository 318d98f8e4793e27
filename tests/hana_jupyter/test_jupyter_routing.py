"""`%%hana auto` on a bare IPython shell against a real server: this notebook's routes
(`%hana route`), `---` prompts routed to different models in parallel, `--tier`, the footer."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from kernel_side import MODEL_A, MODEL_B

from hana_jupyter.magics import HanaMagicError, parse_route_pairs

SIMPLE = "What is the capital of Peru?"
COMPLEX = "Prove that there are infinitely many primes, step by step."


def _finals(ip: InteractiveShell) -> list[str]:
    outputs = ip.display_pub.by_id().values()  # type: ignore[attr-defined]
    return [str(o[-1]["data"]["text/plain"]) for o in outputs]


def _streams(ip: InteractiveShell) -> list[Any]:
    return list(ip.magics_manager.registry["HanaMagics"].last_streams)


def test_auto_cell_routes_each_prompt_to_its_tier_in_parallel(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("hana", f"route simple={MODEL_A} complex={MODEL_B}")
    assert f"auto: simple → {MODEL_A}, complex → {MODEL_B}" in capsys.readouterr().out
    shell.run_cell_magic("hana", "auto -n 8 -t 0 -o answers", f"{SIMPLE}\n---\n{COMPLEX}\n")
    first, second = _streams(shell)
    assert first.completion.final["hana_route"]["model"] == MODEL_A
    assert second.completion.final["hana_route"]["model"] == MODEL_B
    assert second.completion.final["hana_route"]["tier"] == "complex"
    simple_footer, complex_footer = _finals(shell)
    assert f"auto → {MODEL_A} (simple: short factual/rewrite ask -1" in simple_footer
    assert f"auto → {MODEL_B} (complex: multi-step reasoning asked +4" in complex_footer
    assert len(shell.user_ns["answers"]) == 2


def test_tier_flag_forces_a_tier(shell: InteractiveShell) -> None:
    shell.run_line_magic("hana", f"route simple={MODEL_A} complex={MODEL_B}")
    shell.run_cell_magic("hana", "auto --tier complex -n 4", SIMPLE)
    (stream,) = _streams(shell)
    route = stream.completion.final["hana_route"]
    assert route["model"] == MODEL_B and route["reason"] == "complex: forced by the request"
    with pytest.raises(HanaMagicError, match="unknown tier 'huge'"):
        shell.run_cell_magic("hana", "auto --tier huge -n 4", SIMPLE)


def test_without_routes_the_cell_says_how_to_set_them(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("hana", "route clear")
    assert "auto uses the server's routes" in capsys.readouterr().out
    with pytest.raises(HanaMagicError, match="no routes configured"):
        shell.run_cell_magic("hana", "auto -n 4", SIMPLE)


def test_route_pairs_are_checked() -> None:
    assert parse_route_pairs(["Simple=a:b", "complex=c"]) == {"simple": "a:b", "complex": "c"}
    for bad in ("simple", "=a", "simple=", "a:b=c"):
        with pytest.raises(ValueError, match="is not TIER=MODEL"):
            parse_route_pairs([bad])


def test_route_verb_reports_usage_errors(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="is not TIER=MODEL"):
        shell.run_line_magic("hana", "route nonsense")
