"""Modelfile parsing with Ollama's grammar: commands, quotes, typed PARAMETERs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from hana_server.errors import InvalidRequest
from hana_server.options import BOOL_OPTIONS, FLOAT_OPTIONS, INT_OPTIONS, LIST_OPTIONS

log = logging.getLogger("hana.store")

COMMANDS = frozenset(
    {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
     "parameter", "message", "requires"}
)  # fmt: skip
MESSAGE_ROLES = frozenset({"system", "user", "assistant"})

# Accepted by Ollama with a warning and then dropped: they no longer do anything.
DEPRECATED_PARAMETERS = frozenset(
    {"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
     "mirostat", "mirostat_tau", "mirostat_eta"}
)  # fmt: skip

_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
# What Go's strconv.ParseInt/ParseFloat accept (Python's int()/float() also take "1_0", " 1").
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(inf|infinity|nan|([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?)", re.I)
# Go's strconv.ParseBool spellings.
_BOOLS = dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True) | dict.fromkeys(
    ("0", "f", "F", "FALSE", "false", "False"), False
)
_SEMVER = re.compile(r"v?\d+(\.\d+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


class _State(Enum):
    NIL = auto()
    NAME = auto()
    VALUE = auto()
    PARAMETER = auto()
    MESSAGE = auto()
    COMMENT = auto()


class _UnexpectedEOF(Exception):
    pass


def _is_space(ch: str) -> bool:
    return ch in " \t"


def _is_newline(ch: str) -> bool:
    return ch in "\r\n"


def _is_alpha(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _next_state(ch: str, state: _State) -> tuple[_State, str]:
    """One step of Ollama's rune state machine: the next state and the rune to keep ("" = none)."""
    if state is _State.NIL:
        if ch == "#":
            return _State.COMMENT, ""
        if _is_space(ch) or _is_newline(ch):
            return _State.NIL, ""
        return _State.NAME, ch
    if state is _State.NAME:
        if _is_alpha(ch):
            return _State.NAME, ch
        if _is_space(ch):
            return _State.VALUE, ""
        raise InvalidRequest(_INVALID_COMMAND)
    if state is _State.VALUE:
        if _is_newline(ch) or _is_space(ch):
            return _State.NIL, ch
        return _State.VALUE, ch
    if state is _State.PARAMETER:
        if _is_alpha(ch) or "0" <= ch <= "9" or ch == "_":
            return _State.PARAMETER, ch
        if _is_space(ch):
            return _State.VALUE, ""
        raise _UnexpectedEOF
    if state is _State.MESSAGE:
        if _is_alpha(ch):
            return _State.MESSAGE, ch
        if _is_space(ch):
            return _State.VALUE, ""
        raise _UnexpectedEOF
    # COMMENT
    return (_State.NIL, "") if _is_newline(ch) else (_State.COMMENT, "")


def _unquote(s: str) -> tuple[str, bool]:
    """Strip `\"\"\"...\"\"\"` or `"..."`; False while a quote is still open."""
    if s.startswith('"""'):
        if len(s) >= 6 and s.endswith('"""'):
            return s[3:-3], True
        return "", False
    if s.startswith('"'):
        if len(s) >= 2 and s.endswith('"'):
            return s[1:-1], True
        return "", False
    return s, True


def _commands(text: str) -> list[tuple[str, str]]:
    """The (command, argument) pairs of `text`, exactly as Ollama's ParseFile splits them."""
    commands: list[tuple[str, str]] = []
    state = _State.NIL
    line = 1
    buf: list[str] = []
    name = role = ""
    for ch in text.removeprefix("\ufeff"):
        if _is_newline(ch):
            line += 1
        try:
            nxt, kept = _next_state(ch, state)
        except InvalidRequest as e:
            raise InvalidRequest(f"(line {line}): {e.message}") from None
        except _UnexpectedEOF:
            raise InvalidRequest(f"unexpected EOF: {''.join(buf)}") from None
        if nxt is not state:
            if state is _State.NAME:
                word = "".join(buf).lower()
                if word not in COMMANDS:
                    raise InvalidRequest(f"(line {line}): {_INVALID_COMMAND}")
                if word == "from":
                    name = "model"
                elif word == "parameter":
                    nxt = _State.PARAMETER
                else:
                    name = word
                    if word == "message":
                        nxt = _State.MESSAGE
            elif state is _State.PARAMETER:
                name = "".join(buf)
            elif state is _State.MESSAGE:
                role = "".join(buf)
                if role not in MESSAGE_ROLES:
                    raise InvalidRequest(f"(line {line}): {_INVALID_ROLE}")
            elif state is _State.VALUE:
                value, closed = _unquote("".join(buf).strip())
                # A space never ends a value, and a newline ends it only outside quotes.
                if not closed or _is_space(kept):
                    buf.append(kept)
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buf.clear()
            state = nxt
        if kept.isprintable():
            buf.append(kept)

    if state is _State.VALUE:
        value, closed = _unquote("".join(buf).strip())
        if not closed:
            raise InvalidRequest("unexpected EOF")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in (_State.NIL, _State.COMMENT):
        raise InvalidRequest("unexpected EOF")
    return commands


def _typed_parameter(key: str, value: str) -> Any:
    """One PARAMETER value in its option's type (Ollama's api.FormatParams)."""
    if key in INT_OPTIONS:
        if not _INT.fullmatch(value):
            raise InvalidRequest(f"invalid int value [{value}]")
        return int(value)
    if key in FLOAT_OPTIONS:
        if not _FLOAT.fullmatch(value):
            raise InvalidRequest(f"invalid float value [{value}]")
        return float(value)
    if key in BOOL_OPTIONS:
        if value not in _BOOLS:
            raise InvalidRequest(f"invalid bool value [{value}]")
        return _BOOLS[value]
    if key in LIST_OPTIONS:
        return [value]
    raise InvalidRequest(f"unknown parameter '{key}'")


@dataclass
class Modelfile:
    """A parsed Modelfile. `from_` is a GGUF path or a model name, as written."""

    from_: str
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    draft: str | None = None
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None

    @classmethod
    def parse(cls, text: str) -> Modelfile:
        """Parse Modelfile `text`; InvalidRequest with Ollama's message on any error."""
        sources: list[str] = []
        mf = cls(from_="")
        for name, arg in _commands(text):
            if name == "model":
                sources.append(arg)
            elif name == "adapter":
                mf.adapters.append(arg)
            elif name in ("template", "system", "draft", "renderer", "parser"):
                setattr(mf, name, arg)
            elif name == "license":
                mf.license.append(arg)
            elif name == "message":
                role, _, content = arg.partition(": ")
                mf.messages.append({"role": role, "content": content})
            elif name == "requires":
                if not _SEMVER.fullmatch(arg):
                    raise InvalidRequest("requires must be a valid semver (e.g. 0.14.0)")
                mf.requires = arg.removeprefix("v")
            elif name in DEPRECATED_PARAMETERS:
                log.warning("Modelfile: parameter %s is deprecated and ignored", name)
            else:
                value = _typed_parameter(name, arg)
                if isinstance(value, list):
                    mf.parameters.setdefault(name, []).extend(value)
                else:
                    mf.parameters[name] = value
        if not sources:
            raise InvalidRequest("no FROM line")
        if len(set(sources)) > 1:
            raise InvalidRequest(f"only one FROM is supported, got {', '.join(sources)}")
        mf.from_ = sources[0]
        return mf
