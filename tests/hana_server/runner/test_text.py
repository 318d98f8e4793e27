"""Streaming text: split UTF-8 characters and stop strings, fed piece by piece like the engine."""

from __future__ import annotations

from hana_server.runner.sequences import SlotPool, common_prefix_length
from hana_server.runner.text import StopStrings, Utf8Stream


def test_multibyte_character_split_over_pieces_is_emitted_whole() -> None:
    stream = Utf8Stream()
    data = "añ€😀".encode()
    shown = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(shown) == "añ€😀"
    assert all(len(part) <= 1 for part in shown)  # nothing half-decoded, never a U+FFFD
    assert stream.finish() == ""


def test_incomplete_character_at_the_end_becomes_replacement() -> None:
    stream = Utf8Stream()
    assert stream.feed("€".encode()[:2]) == ""
    assert stream.finish() == "\ufffd"


def test_stop_string_split_over_pieces_is_held_back_and_cut() -> None:
    stops = StopStrings(["<end>"])
    shown = []
    stopped = False
    for piece in ["Hello <", "e", "nd", "> more"]:
        text, stopped = stops.feed(piece)
        shown.append(text)
        if stopped:
            break
    assert stopped
    assert "".join(shown) == "Hello "


def test_false_start_of_stop_string_is_released() -> None:
    stops = StopStrings(["<end>"])
    assert stops.feed("a <e") == ("a ", False)
    assert stops.feed("x") == ("<ex", False)
    assert stops.flush() == ""


def test_held_tail_is_flushed_when_the_answer_ends_otherwise() -> None:
    stops = StopStrings(["STOP"])
    assert stops.feed("abcST") == ("abc", False)
    assert stops.flush() == "ST"


def test_earliest_of_several_stop_strings_wins() -> None:
    stops = StopStrings(["world", "lo"])
    assert stops.feed("hello world") == ("hel", True)


def test_without_stop_strings_text_passes_unchanged() -> None:
    stops = StopStrings([])
    assert stops.feed("any<") == ("any<", False)


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix_length([1, 2, 3], [1, 9, 3]) == 1
    assert common_prefix_length([], [1]) == 0


def test_slot_pool_prefers_longest_prefix_then_least_recently_used() -> None:
    pool = SlotPool(3)
    a, b, c = pool.slots
    a.tokens, b.tokens, c.tokens = [1, 2, 3], [1, 2], [7]
    taken = pool.acquire([1, 2, 3, 4])
    assert taken == (a, 3)
    pool.release(a)
    pool.release(b)  # b is now the most recently used of the free slots
    slot, shared = pool.acquire([9])  # type: ignore[misc]
    assert (slot, shared) == (c, 0)
    assert pool.acquire([9]) == (a, 0)  # a was released before b
    assert pool.acquire([9]) == (b, 0)
    assert pool.acquire([9]) is None
