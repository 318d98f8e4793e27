"""gpt-oss output (OpenAI's harmony format): messages on channels instead of thinking tags.

    <|channel|>analysis<|message|>thinking…<|end|>
    <|start|>assistant<|channel|>final<|message|>the answer<|return|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json
    <|message|>{"city":"Paris"}<|call|>           (one line in the output)

`analysis` is thinking, `final` (and `commentary` with no recipient) is content, a message to
`functions.NAME` is a tool call whose body is the JSON arguments. A header is at most
`MAX_HEADER` characters; anything longer is not harmony and is shown as content.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from hana_server.parsers.jsonscan import loads
from hana_server.parsers.toolcalls import ToolCall, new_call_id

MESSAGE, END, CALL, RETURN, START = "<|message|>", "<|end|>", "<|call|>", "<|return|>", "<|start|>"
_ENDS = (END, CALL, RETURN, START)
MAX_HEADER = 1024
MAX_TOKEN = 16  # the longest special token; an unclosed `<|` longer than this is plain text
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")


class HarmonyParser:
    """Splits harmony output into (thinking, content); tool calls wait in `take_calls()`."""

    def __init__(self, *, make_id: Callable[[], str] = new_call_id) -> None:
        self._make_id = make_id
        self._in_header = True  # the prompt ends with `<|start|>assistant`
        self._header = ""
        self._channel = ""
        self._recipient = ""
        self._body: list[str] = []  # a tool call's arguments so far
        self._held = ""
        self._calls: list[ToolCall] = []
        self._count = 0

    def take_calls(self) -> list[ToolCall]:
        calls, self._calls = self._calls, []
        return calls

    def add(self, text: str) -> tuple[str, str]:
        thinking: list[str] = []
        content: list[str] = []
        buffer = self._held + text
        self._held = ""
        while buffer:
            if self._in_header:
                header = self._header + buffer
                at = header.find(MESSAGE)
                if at < 0:
                    self._header = header
                    if len(header) > MAX_HEADER:  # not harmony after all
                        content.append(header)
                        self._header, self._in_header, self._channel = "", False, "final"
                    break
                self._header, buffer = header[:at], header[at + len(MESSAGE) :]
                self._open_message()
                continue
            cut, token = _first_end(buffer)
            if cut < 0:
                keep = _partial_token(buffer)
                self._deliver(buffer[: len(buffer) - keep], thinking, content)
                self._held = buffer[len(buffer) - keep :]
                break
            self._deliver(buffer[:cut], thinking, content)
            buffer = buffer[cut + len(token) :]
            content.append(self._close_message())
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        thinking: list[str] = []
        content: list[str] = []
        if not self._in_header:
            self._deliver(self._held, thinking, content)
            content.append(self._close_message())
        elif self._header.strip() and MESSAGE not in self._header:
            content.append(self._header + self._held)  # never became a message
        self._held = ""
        return "".join(thinking), "".join(content)

    def _open_message(self) -> None:
        header, self._header = self._header, ""
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        self._channel = channel.group(1) if channel else "final"
        self._recipient = recipient.group(1) if recipient else ""
        self._in_header = False

    def _deliver(self, text: str, thinking: list[str], content: list[str]) -> None:
        if not text:
            return
        if self._recipient:
            self._body.append(text)
        elif self._channel == "analysis":
            thinking.append(text)
        else:
            content.append(text)

    def _close_message(self) -> str:
        """Ends the message; returns the text of a call that could not be read (as content)."""
        body, recipient = "".join(self._body), self._recipient
        self._body, self._recipient, self._in_header = [], "", True
        if recipient.startswith("functions."):
            try:
                arguments = loads(body) if body.strip() else {}
            except ValueError:
                arguments = None
            if isinstance(arguments, dict):
                name = recipient.removeprefix("functions.")
                self._calls.append(
                    {
                        "id": self._make_id(),
                        "function": {"index": self._count, "name": name, "arguments": arguments},
                    }
                )
                self._count += 1
                return ""
        return body


def _first_end(text: str) -> tuple[int, str]:
    found = (-1, "")
    for token in _ENDS:
        at = text.find(token)
        if at >= 0 and (found[0] < 0 or at < found[0]):
            found = (at, token)
    return found


def _partial_token(text: str) -> int:
    """How much of the end of `text` may be a special token cut across pieces."""
    at = text.rfind("<|", max(0, len(text) - MAX_TOKEN))
    if at < 0:
        return 1 if text.endswith("<") else 0
    return len(text) - at if "|>" not in text[at:] else 0
