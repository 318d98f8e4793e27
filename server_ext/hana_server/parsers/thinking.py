"""Thinking text separated from content by a pair of tags (`<think>`…`</think>`).

Follows Ollama's generic thinking parser: leading whitespace is ignored; if the first visible
output is not the opening tag the model skipped thinking and everything is content; whitespace
right after either tag is dropped; a partial closing tag at the end of a piece is held back until
the next piece says what it is. A prompt that already ends with the opening tag (Qwen-style
templates open it for the model) starts the parser inside the thinking; a stray repeated opening
tag there is eaten too.
"""

from __future__ import annotations

from enum import Enum, auto

from hana_server.parsers.text import partial_suffix


class _State(Enum):
    LOOKING = auto()  # before any visible output: is it the opening tag?
    OPENED = auto()  # just after the opening tag (whitespace dropped, a repeated tag eaten)
    THINKING = auto()
    CLOSED = auto()  # just after the closing tag (whitespace dropped)
    CONTENT = auto()


class ThinkingParser:
    """Splits generated text into (thinking, content), one piece at a time.

    >>> p = ThinkingParser("<think>", "</think>")
    >>> p.add("<thi"), p.add("nk>hmm</th"), p.add("ink>\\n\\nHi")
    (('', ''), ('hmm', ''), ('', 'Hi'))
    """

    def __init__(self, opening: str, closing: str, *, start_thinking: bool = False) -> None:
        if not opening or not closing:
            raise ValueError("thinking tags must not be empty")
        self.opening = opening
        self.closing = closing
        self._state = _State.OPENED if start_thinking else _State.LOOKING
        self._held = ""  # text that may still be (part of) a tag

    def add(self, text: str) -> tuple[str, str]:
        """Feed one piece; returns (thinking, content) that can be shown now."""
        thinking: list[str] = []
        content: list[str] = []
        buffer = self._held + text
        self._held = ""
        while buffer:
            state = self._state
            if state is _State.LOOKING:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                if buffer.startswith(self.opening):
                    buffer = buffer[len(self.opening) :]
                    self._state = _State.OPENED
                elif self.opening.startswith(buffer):
                    self._held = buffer  # maybe the tag, cut across pieces
                    break
                else:
                    self._state = _State.CONTENT  # no thinking this time
            elif state is _State.OPENED:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                if buffer.startswith(self.opening):
                    buffer = buffer[len(self.opening) :]
                elif self.opening.startswith(buffer):
                    self._held = buffer
                    break
                else:
                    self._state = _State.THINKING
            elif state is _State.THINKING:
                end = buffer.find(self.closing)
                if end >= 0:
                    thinking.append(buffer[:end])
                    buffer = buffer[end + len(self.closing) :]
                    self._state = _State.CLOSED
                else:
                    keep = partial_suffix(buffer, self.closing)
                    thinking.append(buffer[: len(buffer) - keep])
                    self._held = buffer[len(buffer) - keep :]
                    break
            elif state is _State.CLOSED:
                buffer = buffer.lstrip()
                if buffer:
                    self._state = _State.CONTENT
            else:
                content.append(buffer)
                break
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The end of generation: what was held back, as what it would have been."""
        held, self._held = self._held, ""
        if self._state is _State.THINKING:
            return held, ""  # a closing tag cut short: it was thinking after all
        if self._state is _State.LOOKING:
            return "", held  # an opening tag cut short is just text
        return "", ""

    @property
    def thinking(self) -> bool:
        """Whether the text so far ended inside the thinking."""
        return self._state in (_State.OPENED, _State.THINKING)
