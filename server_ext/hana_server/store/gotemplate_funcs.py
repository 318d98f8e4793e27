"""Template functions for :mod:`.gotemplate`: Go's builtins and Ollama's additions.

Go's ``text/template`` builtins (``not eq ne lt le gt ge len index slice print printf println html
js urlquery call``; ``and``/``or`` are here for arity but short-circuit in the executor) with Go's
rules: comparisons refuse mixed kinds, ``len`` counts UTF-8 bytes of a string, ``index`` of a
missing map key is the zero value. Ollama's template package adds ``json``, ``currentDate``,
``yesterdayDate`` and ``toTypeScriptType``.
"""

from __future__ import annotations

import inspect
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .gotemplate_fmt import go_type_name, marshal_json, sprint, sprintf, sprintln


@dataclass(frozen=True, slots=True)
class Function:
    """A template function and how many arguments it takes (max None = variadic)."""

    call: Callable[..., Any]
    min_args: int
    max_args: int | None

    @classmethod
    def wrap(cls, func: Callable[..., Any]) -> Function:
        """Derive the arity of a user-supplied Python callable from its signature."""
        params = inspect.signature(func).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = sum(1 for p in positional if p.default is p.empty)
        variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
        return cls(func, required, None if variadic else len(positional))


def truth(value: Any) -> bool:
    """Go's notion of a true value: non-zero, non-empty, non-nil; structs are always true."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | complex):
        return bool(value)
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value) > 0
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "invalid"
    for python_type, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, python_type):
            return kind
    return "complex" if isinstance(value, complex) else "other"


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("missing argument for comparison")
    first_kind = _kind(first)
    for other in others:
        if _kind(other) != first_kind:
            if first is not None and other is not None:
                raise ValueError("incompatible types for comparison")
        elif first == other:
            return True
    return False


def _ne(first: Any, second: Any) -> bool:
    return not _eq(first, second)


def _lt(first: Any, second: Any) -> bool:
    first_kind, second_kind = _kind(first), _kind(second)
    if first_kind not in ("int", "float", "string") or second_kind not in (
        "int",
        "float",
        "string",
    ):
        raise ValueError("invalid type for comparison")
    if first_kind != second_kind:
        raise ValueError("incompatible types for comparison")
    return bool(first < second)


def _le(first: Any, second: Any) -> bool:
    return _lt(first, second) or _eq(first, second)


def _gt(first: Any, second: Any) -> bool:
    return not _le(first, second)


def _ge(first: Any, second: Any) -> bool:
    return not _lt(first, second)


def _not(value: Any) -> bool:
    return not truth(value)


def _len(value: Any) -> int:
    if value is None:
        raise ValueError("len of nil pointer")
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogateescape"))  # Go counts bytes
    if isinstance(value, bytes | list | tuple | dict):
        return len(value)
    raise ValueError(f"len of type {go_type_name(value)}")


def _int_index(index: Any, length: int, *, allow_end: bool = False) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"cannot index slice/array with type {go_type_name(index)}")
    if index < 0 or index > length or (index == length and not allow_end):
        raise ValueError(f"index out of range: {index}")
    return index


def _index(item: Any, *indexes: Any) -> Any:
    for index in indexes:
        if item is None:
            raise ValueError("index of untyped nil")
        if isinstance(item, dict):
            item = item.get(index)
        elif isinstance(item, str | bytes | list | tuple):
            sequence = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
            item = sequence[_int_index(index, len(sequence))]
        else:
            raise ValueError(f"can't index item of type {go_type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise ValueError("slice of untyped nil")
    if len(indexes) > 3:
        raise ValueError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise ValueError("cannot 3-index slice a string")
        raw = item.encode("utf-8", "surrogateescape")
        return raw[_slice_bounds(len(raw), indexes)].decode("utf-8", "replace")
    if isinstance(item, bytes | list | tuple):
        return item[_slice_bounds(len(item), indexes)]
    raise ValueError(f"can't slice item of type {go_type_name(item)}")


def _slice_bounds(length: int, indexes: Sequence[Any]) -> slice:
    bounds = [_int_index(index, length, allow_end=True) for index in indexes]
    start = bounds[0] if bounds else 0
    stop = bounds[1] if len(bounds) > 1 else length
    if start > stop:
        raise ValueError(f"invalid slice index: {start} > {stop}")
    if len(bounds) == 3 and bounds[2] < stop:
        raise ValueError(f"invalid slice index: {stop} > {bounds[2]}")
    return slice(start, stop)


def _printable_args(args: Sequence[Any]) -> str:
    """The single string html/js/urlquery work on: one string as is, else Sprint of everything."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args])


_HTML_ESCAPES = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
_JS_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"'}
_JS_ESCAPES |= {"<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def _html(*args: Any) -> str:
    return "".join(_HTML_ESCAPES.get(char, char) for char in _printable_args(args))


def _js_char(char: str) -> str:
    if char in _JS_ESCAPES:
        return _JS_ESCAPES[char]
    if ord(char) < 0x20 or (ord(char) >= 0x80 and not char.isprintable()):
        return f"\\u{ord(char):04X}"
    return char


def _js(*args: Any) -> str:
    return "".join(_js_char(char) for char in _printable_args(args))


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_printable_args(args), safe="")


def _print(*args: Any) -> str:
    return sprint(list(args))


def _println(*args: Any) -> str:
    return sprintln(list(args))


def _printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise ValueError(f"wrong type for value; expected string; got {go_type_name(fmt)}")
    return sprintf(fmt, list(args))


def _call(func: Any, *args: Any) -> Any:
    if func is None:
        raise ValueError("call of nil")
    if not callable(func):
        raise ValueError(f"non-function of type {go_type_name(func)}")
    return func(*args)


def _json(value: Any) -> str:
    # Ollama's json ignores the marshal error and returns the (empty) bytes it got.
    try:
        return marshal_json(value)
    except ValueError:
        return ""


def _current_date(*_format: str) -> str:
    # Ollama accepts a format argument but ignores it: always YYYY-MM-DD, local time.
    return datetime.now().strftime("%Y-%m-%d")


def _yesterday_date(*_format: str) -> str:
    return (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d")


def _to_typescript_type(value: Any) -> str:
    converter = getattr(value, "to_typescript_type", None)
    return str(converter()) if callable(converter) else "any"


LAZY_FUNCTIONS = frozenset({"and", "or"})  # evaluated in the executor: they short-circuit

BUILTINS: dict[str, Function] = {
    "and": Function(lambda *a: a[-1], 1, None),
    "or": Function(lambda *a: a[-1], 1, None),
    "not": Function(_not, 1, 1),
    "eq": Function(_eq, 1, None),
    "ne": Function(_ne, 2, 2),
    "lt": Function(_lt, 2, 2),
    "le": Function(_le, 2, 2),
    "gt": Function(_gt, 2, 2),
    "ge": Function(_ge, 2, 2),
    "len": Function(_len, 1, 1),
    "index": Function(_index, 1, None),
    "slice": Function(_slice, 1, None),
    "print": Function(_print, 0, None),
    "println": Function(_println, 0, None),
    "printf": Function(_printf, 1, None),
    "html": Function(_html, 0, None),
    "js": Function(_js, 0, None),
    "urlquery": Function(_urlquery, 0, None),
    "call": Function(_call, 1, None),
    # Ollama's additions (template/template.go)
    "json": Function(_json, 1, 1),
    "currentDate": Function(_current_date, 0, None),
    "yesterdayDate": Function(_yesterday_date, 0, None),
    "toTypeScriptType": Function(_to_typescript_type, 1, 1),
}
