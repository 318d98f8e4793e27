"""Request bodies parsed the way Go's encoding/json reads them, so bad input is a 400, never a 500.

Python's `json` accepts what Go refuses (NaN, Infinity, numbers beyond float64) and raises other
exception types for what it cannot read (invalid UTF-8, nesting deeper than its recursion limit,
integers with more than 4300 digits). `loads_object` turns all of that into `InvalidRequest` with
Go's wording, bounds the nesting depth, and replaces lone UTF-16 surrogates in strings with U+FFFD
as Go's decoder does (a lone surrogate cannot be encoded as UTF-8, so it would fail much later, in
a template, a tokenizer or a socket write). Used by the server's handlers and by the runner, which
is a process boundary of its own.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hana_protocol.errors import InvalidRequest

# Deeper than any real request (a JSON schema in `format` nests a handful of levels); shallow
# enough that no recursive walk over the value (pydantic, templates, json.dumps) can run out of
# Python stack.
MAX_DEPTH = 64

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    # Go: NaN and Infinity are not JSON.
    raise InvalidRequest(f"invalid character '{name[0] if name[0] != '-' else name[1]}' "
                         "looking for beginning of value")  # fmt: skip


def _out_of_range(text: str) -> InvalidRequest:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return InvalidRequest(f"json: cannot unmarshal number {shown} into Go value of type float64")


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _out_of_range(text)
    return value


def _parse_int(text: str) -> int:
    # Go decodes every number into a float64 first: anything beyond its range is refused there.
    if len(text.lstrip("-")) > 308 and float(text) in (float("inf"), float("-inf")):
        raise _out_of_range(text)
    return int(text)


def clean_string(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (what Go makes of them)."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _clean(value: Any) -> Any:
    """Check the depth and clean every string, without recursion (the value may be deep)."""
    root = [value]
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"invalid JSON: exceeded max depth of {MAX_DEPTH}")
        if isinstance(container, list):
            for index, item in enumerate(container):
                if isinstance(item, str):
                    container[index] = clean_string(item)
                elif isinstance(item, list | dict):
                    stack.append((item, depth + 1))
        else:
            for key in list(container):
                item = container[key]
                if isinstance(item, str):
                    item = clean_string(item)
                elif isinstance(item, list | dict):
                    stack.append((item, depth + 1))
                clean_key = clean_string(key)
                if clean_key != key:
                    del container[key]
                container[clean_key] = item
    return root[0]


def loads(body: bytes | str) -> Any:
    """Parse a JSON document; `InvalidRequest` (400) for anything Go's decoder would refuse."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRequest(
                f"invalid JSON: the body is not valid UTF-8 (byte {error.start})"
            ) from None
    else:
        text = body
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"invalid JSON: {error.msg} at line {error.lineno}") from None
    except RecursionError:
        raise InvalidRequest(f"invalid JSON: exceeded max depth of {MAX_DEPTH}") from None
    except ValueError as error:  # e.g. an integer literal beyond Python's digit limit
        raise InvalidRequest(f"invalid JSON: {error}") from None
    return _clean(value)


def loads_object(body: bytes | str) -> dict[str, Any]:
    """A request body: a JSON object; empty -> `missing request body`, as Ollama answers."""
    if not body or not body.strip():
        raise InvalidRequest("missing request body")
    value = loads(body)
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value
