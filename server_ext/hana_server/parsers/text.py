"""Small text helpers shared by the parsers."""

from __future__ import annotations


def partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a proper start of `tag` (0 if none):
    how much to hold back because the next piece may complete the tag."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
