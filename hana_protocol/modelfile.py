"""Modelfile parsing with Ollama's grammar: commands, quotes, typed PARAMETERs."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path
from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_protocol.options import BOOL_OPTIONS, FLOAT_OPTIONS, INT_OPTIONS, LIST_OPTIONS

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

    def unsupported(self) -> str | None:
        """The first command hana cannot honour, named for an error, or None."""
        for present, what in (
            (self.adapters, "ADAPTER (LoRA adapters)"),
            (self.draft, "DRAFT (speculative decoding)"),
            (self.renderer or self.parser, "RENDERER and PARSER (Ollama's built-in Go renderers)"),
        ):
            if present:
                return f"{what} is not supported by hana; use TEMPLATE for prompts"
        return None


#: Ollama's `/api/create` answer when neither an installed model nor uploaded files are named.
NO_SOURCE = "neither 'from' or 'files' was specified"


def resolve_from(source: str, base_dir: Path) -> Path | None:
    """The GGUF file FROM names (Ollama's expandPath), or None when FROM names a model.

    A relative path is read from `base_dir` (the Modelfile's folder); a directory must hold
    exactly one .gguf file; something that looks like a path but is missing is an error rather
    than a model name, so a typo does not become "model not found".
    """
    if source.startswith("~"):
        path = Path(source).expanduser()
    else:
        path = Path(source) if os.path.isabs(source) else base_dir / source
    path = path.absolute()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise InvalidRequest(
                f"FROM {source}: the directory holds {len(ggufs)} .gguf files; name one of them"
            )
        return ggufs[0]
    if path.is_file():
        return path
    if looks_like_path(source):
        raise InvalidRequest(f"FROM {source}: no such file {path}")
    return None


def looks_like_path(source: str) -> bool:
    """True if FROM `source` names a file rather than a model (decided on the text alone)."""
    return (
        source.startswith((".", "/", "~", "\\"))
        or "\\" in source
        or source.lower().endswith((".gguf", ".bin", ".safetensors"))
        or (len(source) > 2 and source[1] == ":" and source[2] in "/\\")  # C:\ or C:/
    )


@dataclass(frozen=True)
class CreatePlan:
    """A Modelfile as Ollama's `/api/create` request: the body, and the file to upload first.

    `fields` are the request's fields other than `model` and `files`; when `model_file` is set
    the caller uploads it as a blob and sends `files: {model_file.name: digest}`, else `fields`
    has `from` (an installed model's name).
    """

    fields: dict[str, Any]
    model_file: Path | None

    def body(self, model: str, model_digest: str | None = None) -> dict[str, Any]:
        """The `/api/create` body for `model`, given the uploaded file's digest."""
        body: dict[str, Any] = {"model": model, **self.fields}
        if self.model_file is not None:
            if model_digest is None:
                raise ValueError("upload the model file first and pass its digest")
            body["files"] = {self.model_file.name: model_digest}
        return body


def plan_create(modelfile: Modelfile, base_dir: Path | None) -> CreatePlan:
    """Translate a parsed Modelfile into a create request, the one way every caller does it.

    `base_dir` is where relative FROM paths are read from, on the caller's machine. None: the
    Modelfile came over HTTP (the legacy `modelfile` field), so FROM may only name an installed
    model; a path is refused with Ollama's answer, without looking at any file (a client must not
    learn which files the server's user has).
    """
    problem = modelfile.unsupported()
    if problem:
        raise InvalidRequest(problem)
    if base_dir is None:
        if looks_like_path(modelfile.from_):
            raise InvalidRequest(NO_SOURCE)
        model_file = None
    else:
        model_file = resolve_from(modelfile.from_, base_dir)
    fields: dict[str, Any] = {} if model_file is not None else {"from": modelfile.from_}
    for name, value in (
        ("template", modelfile.template),
        ("system", modelfile.system),
        ("parameters", modelfile.parameters),
        ("messages", modelfile.messages),
        ("license", modelfile.license),
        ("requires", modelfile.requires),
    ):
        if value:
            fields[name] = value
    return CreatePlan(fields, model_file)


def plan_create_from_file(path: Path) -> CreatePlan:
    """Read and translate the Modelfile at `path`; relative FROM paths are taken from its folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InvalidRequest(f"cannot read Modelfile {path}: {reason}") from None
    try:
        modelfile = Modelfile.parse(text)
    except InvalidRequest as error:
        raise InvalidRequest(f"{path}: {error.message}") from None
    return plan_create(modelfile, Path(path).absolute().parent)
