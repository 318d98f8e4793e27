"""Chat history truncation: the same start as Ollama's scan back from the last message, system
messages and the last message always kept."""

from __future__ import annotations

import random

from hana_server.history import first_kept, image_tokens, kept_messages, surely_fits


def ollama_scan(messages: list[dict], num_ctx: int, cost: dict[int, int]) -> int:
    """server/prompt.go's loop: from the message before the last back to the first, keep going
    while the prompt from there fits."""
    first = len(messages) - 1
    for index in range(len(messages) - 2, -1, -1):
        if cost[index] > num_ctx:
            break
        first = index
    return first


def conversation(sizes: list[int], system_at: set[int]) -> list[dict]:
    return [
        {"role": "system" if i in system_at else ("user" if i % 2 else "assistant"), "n": n}
        for i, n in enumerate(sizes)
    ]


async def test_the_same_start_as_ollamas_scan_with_fewer_counts() -> None:
    chooser = random.Random(7)
    for _ in range(300):
        sizes = [chooser.randint(1, 50) for _ in range(chooser.randint(1, 12))]
        messages = conversation(sizes, {0} if chooser.random() < 0.5 else set())
        cost = {i: sum(m["n"] for m in kept_messages(messages, i)) for i in range(len(sizes))}
        num_ctx = chooser.randint(1, sum(sizes) + 5)
        counted: list[int] = []

        async def tokens_from(
            first: int, cost: dict[int, int] = cost, counted: list[int] = counted
        ) -> int:
            counted.append(first)
            return cost[first]

        expected = 0 if cost[0] <= num_ctx else ollama_scan(messages, num_ctx, cost)
        assert await first_kept(messages, num_ctx, tokens_from) == expected
        assert len(counted) <= 1 + max(1, len(sizes)).bit_length()


def test_system_messages_before_the_start_stay_and_the_rest_is_the_newest() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "system", "content": "now in French"},
        {"role": "user", "content": "new question"},
    ]
    assert kept_messages(messages, 2) == [messages[0], *messages[2:]]
    assert kept_messages(messages, 4) == [messages[0], messages[3], messages[4]]


def test_a_prompt_shorter_in_bytes_than_the_context_needs_no_tokenizing() -> None:
    assert surely_fits("x" * 100, 0, 101)
    assert not surely_fits("x" * 100, 0, 100)  # BOS
    assert not surely_fits("é" * 60, 0, 100)  # bytes, not characters
    assert not surely_fits("x", image_tokens([{"images": ["a", "b"]}]), 1000)  # 2 x 768
