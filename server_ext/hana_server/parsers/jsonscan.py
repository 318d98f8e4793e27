"""An incremental, string-aware bracket scanner: where a JSON object or array in a growing text
ends, found with each character looked at once, whatever the text's length or nesting."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 128  # deeper nesting is refused: no tool's arguments are like that, and json's
# recursive decoder must never meet a hostile depth


class TooDeep(ValueError):
    """The value nests deeper than MAX_DEPTH."""


class BracketScanner:
    """Follows one JSON value that starts with `{` or `[` as its text arrives.

    `feed(text)` returns the offset in `text` just past the value's closing bracket, or -1 while
    it is still open; the first character fed must be the opening bracket.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> int:
        for i, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise TooDeep(f"JSON nested deeper than {MAX_DEPTH}")
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return -1


def loads(text: str) -> Any:
    """`json.loads`, with every failure (a bad document, a recursion error) as ValueError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(str(error)) from None
