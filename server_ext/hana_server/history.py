"""Chat history truncation, as Ollama does it: when a conversation's prompt does not fit num_ctx,
the oldest messages go first, never a system message and never the last message, so a long
notebook conversation keeps its instructions and its question instead of being cut mid-message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

# Ollama counts each image of a vision model as this many tokens when it fits a history.
IMAGE_TOKENS = 768

Message = dict[str, Any]


def kept_messages(messages: Sequence[Message], first: int) -> list[Message]:
    """The conversation from `messages[first]` on, after every system message before it."""
    return [m for m in messages[:first] if m.get("role") == "system"] + list(messages[first:])


def image_tokens(messages: Sequence[Message]) -> int:
    return IMAGE_TOKENS * sum(len(m.get("images") or ()) for m in messages)


def surely_fits(prompt: str, images: int, num_ctx: int) -> bool:
    """True without tokenizing when even one token per byte (plus BOS) would fit: every token but
    BOS stands for at least one byte of the text."""
    return len(prompt.encode()) + 1 + images <= num_ctx


async def first_kept(
    messages: Sequence[Message], num_ctx: int, tokens_from: Callable[[int], Awaitable[int]]
) -> int:
    """The index of the oldest message to keep (0: all of them fit).

    `tokens_from(first)` counts the prompt of `kept_messages(messages, first)`, images included.
    Ollama scans back from the last message, rendering and tokenizing once per message; dropping
    messages never lengthens the prompt, so a bisection finds the same start in log2(n) counts.
    """
    last = len(messages) - 1
    if last <= 0 or await tokens_from(0) <= num_ctx:
        return 0
    fits_from, too_long_from = last, 0  # the last message is kept whatever it costs
    while fits_from - too_long_from > 1:
        middle = (fits_from + too_long_from) // 2
        if await tokens_from(middle) <= num_ctx:
            fits_from = middle
        else:
            too_long_from = middle
    return fits_from
