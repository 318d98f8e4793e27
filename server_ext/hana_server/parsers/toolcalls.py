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


MAX_PENDING = 4096  # whitespace held before deciding; more than this is just content


class ToolCallParser:
    """Finds tool calls in generated text, one piece at a time (see the module docstring).

    Held text is kept as lists of pieces, joined once when it is used, so a long call or a long
    stretch of held text costs time linear in its length.
    """

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
        self._pending = ""  # small: a possible partial tag or prefix, or leading whitespace
        self._held: list[str] = []  # bare JSON: the text since it began (content if no call)
        self._raw: list[str] = []  # explicit tag: everything after it (content if no call)
        self._gap: list[str] = []  # explicit tag: the text since the last JSON object
        self._object: list[str] = []  # the JSON being scanned
        self._scanner: BracketScanner | None = None
        self._broken = False  # JSON after an explicit tag nested too deep: stop reading
        self.count = 0

    def add(self, text: str) -> tuple[str, list[ToolCall]]:
        """Feed one piece; returns (content to show now, calls completed in it)."""
        content: list[str] = []
        calls: list[ToolCall] = []
        while text is not None:
            text = self._step(text, content, calls)
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of generation: held text that never became a call, as content."""
        state, self._state = self._state, _State.OFF
        if state is _State.TAGGED:
            return ("" if self.count else self.tag + "".join(self._raw)), []
        if state is _State.JSON:
            return "".join(self._held), []
        if state in (_State.START, _State.SEARCH):
            return self._pending, []
        return "", []  # BETWEEN: only separators were held; OFF: nothing

    # ------------------------------------------------------------------ states

    def _step(self, text: str, content: list[str], calls: list[ToolCall]) -> str | None:
        """Handle `text` in the current state; returns text left for the next state, or None."""
        state = self._state
        if state is _State.OFF:
            content.append(text)
        elif state is _State.START:
            return self._start(self._pending + text, content)
        elif state is _State.SEARCH:
            return self._search(self._pending + text, content)
        elif state is _State.TAGGED:
            self._raw.append(text)
            self._scan_tagged(text, calls)
        elif state is _State.JSON:
            return self._scan_bare(text, content, calls)
        else:
            return self._between(self._pending + text, content)
        return None

    def _start(self, text: str, content: list[str]) -> str | None:
        self._pending = ""
        visible = text.lstrip()
        for prefix in CALL_PREFIXES:
            if visible.startswith(prefix):
                visible = visible[len(prefix) :].lstrip()
            elif visible and prefix.startswith(visible):
                visible = ""  # maybe the prefix, cut across pieces: wait
        if not visible:
            if len(text) > MAX_PENDING:
                self._state = _State.OFF
                return text
            self._pending = text
            return None
        if not visible.startswith(self.tag):
            self._state = _State.OFF
            return text
        at = len(text) - len(visible)
        self._held = [text[:at]]
        self._begin_json()
        return text[at:]

    def _begin_json(self) -> None:
        self._state = _State.JSON
        self._scanner = BracketScanner()
        self._object = []

    def _search(self, text: str, content: list[str]) -> str | None:
        self._pending = ""
        at = text.find(self.tag)
        if at < 0:
            keep = partial_suffix(text, self.tag)
            content.append(text[: len(text) - keep])
            self._pending = text[len(text) - keep :]
            return None
        content.append(text[:at])
        self._state = _State.TAGGED
        return text[at + len(self.tag) :]

    def _scan_bare(self, text: str, content: list[str], calls: list[ToolCall]) -> str | None:
        assert self._scanner is not None
        self._held.append(text)
        try:
            end = self._scanner.feed(text)
        except TooDeep:
            end = -2
        if end == -1:
            self._object.append(text)
            return None
        found = self._read("".join(self._object) + text[:end]) if end >= 0 else []
        self._scanner = None
        if not found:  # not calls: all of it was content
            self._state = _State.OFF
            content.append("".join(self._held))
            self._held = []
            return None
        calls += found
        self._held = []
        self._state = _State.BETWEEN
        return text[end:]

    def _between(self, text: str, content: list[str]) -> str | None:
        self._pending = ""
        rest = text.lstrip(_SEPARATORS)
        if not rest:
            return None  # separators after calls are dropped
        if rest.startswith(self.tag):
            self._held = []
            self._begin_json()
            return rest
        self._state = _State.OFF  # prose after the calls
        return rest

    def _scan_tagged(self, text: str, calls: list[ToolCall]) -> None:
        at = 0
        while at < len(text) and not self._broken:
            if self._scanner is None:  # the next object starts at the next `{`
                start = text.find("{", at)
                if start < 0:
                    self._gap.append(text[at:])
                    return
                self._gap.append(text[at:start])
                self._scanner, self._object, at = BracketScanner(), [], start
            try:
                end = self._scanner.feed(text, at)
            except TooDeep:
                self._broken = True  # nothing after an unreadable depth can be trusted
                return
            if end < 0:
                self._object.append(text[at:])
                return
            self._object.append(text[at:end])
            calls += self._read("".join(self._object), "".join(self._gap))
            self._scanner, self._object, self._gap = None, [], []
            at = end

    def _read(self, text: str, before: str = "") -> list[ToolCall]:
        """The calls in one closed JSON value (all of its items must be calls, or none count)."""
        try:
            value = loads(text)
        except ValueError:
            return []
        items = value if isinstance(value, list) and self.bare else [value]
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
