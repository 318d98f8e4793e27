"""An incremental, string-aware bracket scanner: where a JSON object or array in a growing text
ends, found with each character looked at once, whatever the text's length or nesting."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 128  # deeper nesting is refused: no tool's arguments are like that, and json's
# recursive decoder must never meet a hostile depth


_IN_STRING = re.compile(r'["\\]')
_OUTSIDE = re.compile(r'["{}\[\]]')


class TooDeep(ValueError):
    """The value nests deeper than MAX_DEPTH."""


class BracketScanner:
    """Follows one JSON value that starts with `{` or `[` as its text arrives.

    `feed(text, start)` reads `text` from `start` and returns the offset in `text` just past the
    value's closing bracket, or -1 while it is still open; the first character ever fed must be
    the opening bracket.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str, start: int = 0) -> int:
        # Jumps from one significant character to the next (C-speed regex search), so long
        # strings and prose cost little; each character is still looked at once.
        at, end = start, len(text)
        while at < end:
            if self._escaped:
                self._escaped = False
                at += 1
                continue
            found = (_IN_STRING if self._in_string else _OUTSIDE).search(text, at)
            if found is None:
                return -1
            at = found.start()
            char = text[at]
            at += 1
            if self._in_string:
                if char == "\\":
                    self._escaped = True
                else:
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise TooDeep(f"JSON nested deeper than {MAX_DEPTH}")
            else:
                self.depth -= 1
                if self.depth == 0:
                    return at
        return -1


def loads(text: str) -> Any:
    """`json.loads`, with every failure (a bad document, a recursion error) as ValueError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(str(error)) from None
