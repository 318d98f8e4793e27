"""Streaming text: split UTF-8 characters and stop strings, fed piece by piece like the engine."""

from __future__ import annotations

from hana_server.runner.sequences import LONG_PREFIX, SlotPool, common_prefix_length
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
    pool = SlotPool(4)
    a, b, c, d = pool.slots
    a.tokens, b.tokens, c.tokens, d.tokens = [1, 2, 3], [1, 2], [7], [8]
    taken = pool.acquire([1, 2, 3, 4])
    assert taken == (a, 3)
    pool.release(a)
    pool.release(b)  # b is now the most recently used of the free slots
    pool.release(d)
    slot, shared = pool.acquire([9])  # type: ignore[misc]
    assert (slot, shared) == (c, 0)  # nothing busy: the least recently used
    assert pool.acquire([1, 2]) == (b, 2)  # next to c, and shares the longer prefix with it
    assert pool.acquire([9]) == (a, 0)  # next to b; d is next to c too, but used more recently
    assert pool.acquire([9]) == (d, 0)
    assert pool.acquire([9]) is None


def test_slot_pool_keeps_busy_slots_next_to_each_other_unless_a_long_prefix_waits() -> None:
    pool = SlotPool(8)
    for slot in pool.slots:  # every slot used once, in the order 7, 6, ..., 0
        pool.acquire([100 + slot.seq_id])
    for slot in reversed(pool.slots):
        pool.release(slot)
    first, _ = pool.acquire([1])  # type: ignore[misc]
    assert first.seq_id == 7  # nothing busy: the least recently used
    # The next ones join it (one micro-batch a step), not the next least recently used.
    assert [pool.acquire([1])[0].seq_id for _ in range(3)] == [6, 5, 4]  # type: ignore[index]
    conversation = pool.slots[0]
    conversation.tokens = list(range(LONG_PREFIX))
    slot, shared = pool.acquire([*range(LONG_PREFIX), 9])  # type: ignore[misc]
    assert (slot, shared) == (conversation, LONG_PREFIX)  # its cache is worth more
