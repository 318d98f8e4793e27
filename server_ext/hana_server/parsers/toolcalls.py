"""Tool calls found in generated text, the way Ollama's generic tool parser finds them.

The parser is told the request's tools and the tag that starts a call, which Ollama derives
from the model's template (store/template_tags.py): `<tool_call>` (Qwen), `[TOOL_CALLS] [`
(Mistral), ``Action: ```json`` (Command R), or `{` / `[` when a template writes calls as bare
JSON (Llama 3.1, which may also put `<|python_tag|>` first).

- Before the tag, text is content; only an end that may be the start of the tag is held back.
- With a bare `{` or `[` tag the first visible character decides: JSON there may be calls,
  anything else turns the parser off. The JSON (several objects in a row count, for parallel
  calls) is held until it closes; if it is not made of calls, it is content after all.
- After an explicit tag everything is held. Each JSON object that closes is read as a call: the
  tool named by its `name`/`tool_name` (or `function.name`) key with `arguments`/`parameters`
  (an object or a JSON string), an object keyed by a tool's name, or a tool name written just
  before the object (`get_weather[ARGS]{...}`). Names not among the tools are not calls.
- Calls are returned whole, in the piece where their JSON closed, numbered from 0, each with an
  id `call_` + 8 random characters (Ollama's shape). Text after the calls is dropped, as Ollama
  drops it. Where Ollama fails the request (#14570, #17274), hana does not: if nothing after
  the tag was a call (malformed or truncated JSON, an unknown name), the text is returned as
  content at the end.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable, Mapping
from enum import Enum, auto
from typing import Any

from hana_server.parsers.jsonscan import BracketScanner, TooDeep, loads
from hana_server.parsers.text import partial_suffix

ToolCall = dict[str, Any]

# Written by Llama 3.1 before a call (its "ipython" environment); hidden like the tag itself.
CALL_PREFIXES = ("<|python_tag|>",)
_SEPARATORS = " \t\r\n;,"  # between calls written one after another as bare JSON
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    """Ollama's tool-call id: `call_` and 8 random lower-case letters or digits."""
    return "call_" + "".join(random.choices(_ID_ALPHABET, k=8))


def tool_names(tools: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """The function names of a request's tools, in order, without blanks or repeats."""
    names: list[str] = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def _arguments(value: Any) -> dict[str, Any] | None:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = loads(value) if value.strip() else {}
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _named_in(text: str, names: list[str]) -> str | None:
    """The tool name written first in `text` (the longest one where several start together)."""
    best: tuple[int, int, str] | None = None
    for name in names:
        at = text.find(name)
        if at >= 0 and (best is None or (at, -len(name)) < best[:2]):
            best = (at, -len(name), name)
    return best[2] if best else None


def call_from(value: Any, names: list[str], before: str = "") -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) if `value` (a parsed JSON object) is a call of one of `names`."""
    if not isinstance(value, dict):
        return None
    function = value.get("function")
    if isinstance(function, dict) and function.get("name") in names:
        value = function
    for key in ("name", "tool_name"):
        name = value.get(key)
        if isinstance(name, str):
            if name not in names:
                return None
            arguments = value.get("arguments", value.get("parameters"))
            args = _arguments(arguments)
            return (name, args) if args is not None else None
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key in names and (args := _arguments(inner)) is not None:
            return key, args
    name = _named_in(before, names)
    return (name, value) if name else None


class _State(Enum):
    START = auto()  # bare-JSON tag: waiting for the first visible character
    SEARCH = auto()  # explicit tag: content until the tag
    JSON = auto()  # bare-JSON tag: inside the calls
    BETWEEN = auto()  # bare-JSON tag: after a call, is another one coming?
    TAGGED = auto()  # explicit tag: after it, everything is held
    OFF = auto()  # no calls: everything is content


class ToolCallParser:
    """Finds tool calls in generated text, one piece at a time (see the module docstring)."""

    def __init__(
        self,
        tools: Iterable[Mapping[str, Any]] | None,
        tag: str = "{",
        *,
        make_id: Callable[[], str] = new_call_id,
    ) -> None:
        self.names = tool_names(tools)
        self.tag = tag.strip() or "{"
        self.bare = self.tag in ("{", "[")
        self._make_id = make_id
        self._state = _State.START if self.bare else _State.SEARCH
        self._buffer = ""  # held text (from the tag on, or a possible partial tag)
        self._raw = ""  # explicit tag: everything after it, returned if no call comes of it
        self._scanner: BracketScanner | None = None
        self._scanned = 0  # how much of `_buffer` the scanner has seen
        self._start = -1  # where the JSON being scanned starts in `_buffer`
        self._done = 0  # `_buffer` before this is used up
        self._broken = False  # the JSON after an explicit tag cannot be read any more
        self.count = 0

    def add(self, text: str) -> tuple[str, list[ToolCall]]:
        """Feed one piece; returns (content to show now, calls completed in it)."""
        if self._state is _State.OFF:
            return text, []
        self._buffer += text
        if self._state is _State.TAGGED:
            self._raw += text
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            state = self._state
            if state is _State.START:
                if not self._start_bare(content):
                    break
            elif state is _State.SEARCH:
                if not self._search(content):
                    break
            elif state in (_State.JSON, _State.TAGGED):
                if not self._scan(content, calls):
                    break
            elif state is _State.BETWEEN:
                if not self._between(content):
                    break
            else:
                content.append(self._buffer)
                self._buffer = ""
                break
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of generation: held text that never became a call, as content."""
        state, self._state = self._state, _State.OFF
        buffer, self._buffer = self._buffer, ""
        if state is _State.TAGGED:
            return ("" if self.count else self.tag + self._raw), []
        if state in (_State.JSON, _State.START, _State.SEARCH):
            return buffer, []
        return "", []  # BETWEEN: only separators were held

    # ------------------------------------------------------------------ states

    def _start_bare(self, content: list[str]) -> bool:
        visible = self._buffer.lstrip()
        if not visible:
            return False
        for prefix in CALL_PREFIXES:
            if visible.startswith(prefix):
                visible = visible[len(prefix) :].lstrip()
                if not visible:
                    return False
            elif prefix.startswith(visible):
                return False  # maybe the prefix, cut across pieces
        if visible.startswith(self.tag):
            self._begin_json(len(self._buffer) - len(visible))
            return True
        self._state = _State.OFF
        return True

    def _search(self, content: list[str]) -> bool:
        at = self._buffer.find(self.tag)
        if at < 0:
            keep = partial_suffix(self._buffer, self.tag)
            content.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        content.append(self._buffer[:at])
        self._buffer = self._buffer[at + len(self.tag) :]
        self._raw = self._buffer
        self._state = _State.TAGGED
        self._done = self._scanned = 0
        self._start = -1
        return True

    def _begin_json(self, at: int) -> None:
        self._state = _State.JSON
        self._scanner = BracketScanner()
        self._start = self._scanned = at

    def _scan(self, content: list[str], calls: list[ToolCall]) -> bool:
        """Advance over held JSON; returns whether the state changed (so look again)."""
        if self._broken:
            self._buffer = ""
            return False
        if self._scanner is None:  # explicit tag: the next object starts at the next `{`
            at = self._buffer.find("{", self._scanned)
            if at < 0:
                self._scanned = len(self._buffer)
                return False
            self._scanner, self._start, self._scanned = BracketScanner(), at, at
        try:
            end = self._scanner.feed(self._buffer[self._scanned :])
        except TooDeep:
            end = -2
        if end == -1:
            self._scanned = len(self._buffer)
            return False
        closed = self._scanned + end if end >= 0 else -1
        found = self._read_calls(closed)
        self._scanner = None
        if self._state is _State.TAGGED:
            if closed < 0:
                self._broken = True  # nothing after an unreadable depth can be trusted
                return False
            calls += found
            self._done = self._scanned = closed
            return True
        if closed >= 0 and found:
            calls += found
            self._buffer, self._scanned = self._buffer[closed:], 0
            self._state = _State.BETWEEN
        else:
            content.append(self._buffer)  # not calls: the JSON was content
            self._buffer = ""
            self._state = _State.OFF
        return True

    def _read_calls(self, closed: int) -> list[ToolCall]:
        if closed < 0:
            return []
        try:
            value = loads(self._buffer[self._start : closed])
        except ValueError:
            return []
        items = value if isinstance(value, list) and self.bare else [value]
        before = self._buffer[self._done : self._start]
        found = [call_from(item, self.names, before) for item in items]
        if not found or any(call is None for call in found):
            return []
        return [self._emit(name, args) for name, args in found if name]

    def _emit(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        call = {
            "id": self._make_id(),
            "function": {"index": self.count, "name": name, "arguments": arguments},
        }
        self.count += 1
        return call

    def _between(self, content: list[str]) -> bool:
        rest = self._buffer.lstrip(_SEPARATORS)
        if not rest:
            return False  # only separators so far: hold them
        if rest.startswith(self.tag):
            self._begin_json(len(self._buffer) - len(rest))
            return True
        content.append(rest)  # prose after the calls
        self._buffer = ""
        self._state = _State.OFF
        return True
