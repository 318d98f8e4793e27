"""Sampled token bytes into text that is safe to stream: whole UTF-8 characters, stop strings.

Both classes are fed once per generated token, so they only ever look at the new piece and a short
held-back tail, never at the whole answer.
"""

from __future__ import annotations

import codecs
from array import array
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


class _StopMatcher:
    """One stop string's Knuth-Morris-Pratt automaton: `matched` is how much of the stop string
    the end of the output spells. Memory is one 4-byte entry per character of the stop string
    and each output character costs amortised O(1), however long the stop string."""

    def __init__(self, stop: str) -> None:
        self.stop = stop
        self.fallback = array("I", bytes(4 * len(stop)))
        k = 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = self.fallback[k - 1]
            if stop[i] == stop[k]:
                k += 1
            self.fallback[i] = k
        self.matched = 0

    def step(self, char: str) -> bool:
        """Take one output character; True when it completes the stop string."""
        stop, k = self.stop, self.matched
        while k and char != stop[k]:
            k = self.fallback[k - 1]
        if char == stop[k]:
            k += 1
        if k == len(stop):
            self.matched = self.fallback[k - 1]
            return True
        self.matched = k
        return False


class StopStrings:
    """Finds the first stop string in the generated text, holding back a tail that may start one.

    `feed` returns the text that can be shown now and whether a stop string was reached; the stop
    string itself and everything after it are never shown (Ollama's behaviour). The held-back tail
    is the longest end of the output that begins some stop string, as the matchers track it.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._matchers = [_StopMatcher(stop) for stop in dict.fromkeys(s for s in stops if s)]
        self._held = ""

    @property
    def active(self) -> bool:
        return bool(self._matchers)

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._matchers:
            return text, False
        held = self._held + text
        first = -1  # where in `held` the earliest stop string completed in this piece starts
        for index, char in enumerate(text, start=len(self._held)):
            for matcher in self._matchers:
                if matcher.step(char):
                    start = index - len(matcher.stop) + 1
                    first = start if first < 0 else min(first, start)
        if first >= 0:
            self._held = ""
            return held[:first], True
        keep = max(matcher.matched for matcher in self._matchers)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The held-back tail when the answer ends for another reason: it was not a stop string."""
        held, self._held = self._held, ""
        return held
