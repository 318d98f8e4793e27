"""ThinkingParser: tags split anywhere, skipped thinking, prompts that open the tag, hostile
text."""

from __future__ import annotations

import pytest
from hana_server.parsers.thinking import ThinkingParser


def run(parser: ThinkingParser, chunks: list[str]) -> tuple[str, str]:
    thinking, content = "", ""
    for chunk in chunks:
        t, c = parser.add(chunk)
        thinking, content = thinking + t, content + c
    t, c = parser.finish()
    return thinking + t, content + c


def split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


TEXT = "  \n<think>\n  I ponder.\n</think>\n\n  Answer with <b>tags</b> and </think> again."


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_split_anywhere_gives_the_same_result(size: int) -> None:
    assert run(ThinkingParser("<think>", "</think>"), split(TEXT, size)) == (
        "I ponder.\n",
        "Answer with <b>tags</b> and </think> again.",
    )


def test_output_that_does_not_start_with_the_tag_is_all_content() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert run(parser, ["Hello <think>not", " really</think>"]) == (
        "",
        "Hello <think>not really</think>",
    )


def test_a_partial_opening_tag_that_goes_nowhere_is_content() -> None:
    assert run(ThinkingParser("<think>", "</think>"), ["<thi"]) == ("", "<thi")
    assert run(ThinkingParser("<think>", "</think>"), ["<thi", "s is html"]) == (
        "",
        "<this is html",
    )


def test_a_prompt_ending_in_the_tag_starts_inside() -> None:
    parser = ThinkingParser("<think>", "</think>", start_thinking=True)
    assert run(parser, ["\nstep 1", "</thi", "nk>\n\nDone"]) == ("step 1", "Done")
    # a model that writes the tag again anyway
    parser = ThinkingParser("<think>", "</think>", start_thinking=True)
    assert run(parser, ["<thi", "nk>x</think>y"]) == ("x", "y")


def test_a_held_closing_prefix_that_is_not_the_tag_is_released_as_thinking() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert parser.add("<think>a </th") == ("a ", "")
    assert parser.add("eory") == ("</theory", "")
    assert parser.thinking


def test_unfinished_thinking_ends_as_thinking() -> None:
    assert run(ThinkingParser("<think>", "</think>"), ["<think>never ", "closed </thin"]) == (
        "never closed </thin",
        "",
    )


def test_other_tags() -> None:
    parser = ThinkingParser("[THINK]", "[/THINK]")
    assert run(parser, split("[THINK]hmm[/THINK]ok", 2)) == ("hmm", "ok")


def test_hostile_text_costs_linear_time_and_holds_little() -> None:
    parser = ThinkingParser("<think>", "</think>")
    parser.add("<think>")
    total = 0
    for _ in range(20_000):  # 1.2 MB of thinking that looks like tags but never closes
        thinking, _ = parser.add("</thin<" * 8 + "<")
        total += len(thinking)
        assert len(parser._held) < len("</think>")
    thinking, _ = parser.finish()
    assert total + len(thinking) == 20_000 * 57
    # a flood of whitespace before anything is dropped as it comes, never accumulated
    parser = ThinkingParser("<think>", "</think>")
    for _ in range(10_000):
        assert parser.add(" " * 100) == ("", "")
    assert parser._held == ""


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")
