"""Sampled token bytes into text that is safe to stream: whole UTF-8 characters, stop strings.

Both classes are fed once per generated token, so they only ever look at the new piece and a short
held-back tail, never at the whole answer.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class Utf8Stream:
    """Bytes in, whole characters out: a character split over two tokens waits for its end."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def finish(self) -> str:
        """The rest at the end of the answer; an incomplete character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


class StopStrings:
    """Finds the first stop string in the generated text, holding back a tail that may start one.

    `feed` returns the text that can be shown now and whether a stop string was reached; the stop
    string itself and everything after it are never shown (Ollama's behaviour).
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(stop for stop in stops if stop))
        # Every proper prefix of a stop string: a tail of the output in this set may still grow into
        # a stop string, so it is held back until the next piece decides.
        self._prefixes = frozenset(stop[:i] for stop in self._stops for i in range(1, len(stop)))
        self._longest_prefix = max((len(prefix) for prefix in self._prefixes), default=0)
        self._held = ""

    @property
    def active(self) -> bool:
        return bool(self._stops)

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        held = self._held + text
        first = -1
        for stop in self._stops:
            index = held.find(stop)
            if index >= 0 and (first < 0 or index < first):
                first = index
        if first >= 0:
            self._held = ""
            return held[:first], True
        keep = 0
        for length in range(min(len(held), self._longest_prefix), 0, -1):
            if held[-length:] in self._prefixes:
                keep = length
                break
        if keep:
            self._held = held[-keep:]
            return held[:-keep], False
        self._held = ""
        return held, False

    def flush(self) -> str:
        """The held-back tail when the answer ends for another reason: it was not a stop string."""
        held, self._held = self._held, ""
        return held
