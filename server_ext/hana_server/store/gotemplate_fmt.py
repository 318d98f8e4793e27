"""Go's text rendering of values for :mod:`.gotemplate`: ``fmt`` (``%v``, ``Sprint``, ``printf``)
and ``encoding/json`` (what Ollama's ``json`` template function returns).

Prompts are compared token by token, so numbers, maps and JSON must come out exactly as Go writes
them: ``1e+06`` for a float ``%v``, ``map[a:1 b:2]`` with sorted keys, JSON without spaces and with
``<``, ``>``, ``&`` escaped. Python values stand in for Go values; two optional methods let an
object act like a Go type with methods: ``go_string()`` (Go's ``fmt.Stringer``) and ``go_json()`` (a
``json.Marshaler``: returns the value to encode instead). A dataclass is a struct; a field's
``metadata={"json": "name,omitempty"}`` is its JSON tag.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------------------------------
# Numbers


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) and the point position: 0.DIGITS x 10^point."""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac = mantissa.partition(".")
    all_digits = int_part + frac
    stripped = all_digits.lstrip("0")
    if not stripped.rstrip("0"):
        return "0", 1
    leading_zeros = len(all_digits) - len(stripped)
    point = len(int_part) + (int(exp_text) if exp_text else 0) - leading_zeros
    return stripped.rstrip("0"), point


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _exponent(digits: str, point: int, *, min_exp_digits: int = 2) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{min_exp_digits}d}"


def _special_float(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def float_v(value: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e+06 up."""
    special = _special_float(value)
    if special is not None:
        return special
    digits, point = _shortest_digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    exp = point - 1
    if digits != "0" and (exp < -4 or exp >= 6):
        return sign + _exponent(digits, point)
    return sign + _fixed(digits, point)


def json_float(value: float) -> str:
    """A float64 as Go's encoding/json writes it (integral values without ``.0``)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {float_v(value)}")
    digits, point = _shortest_digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return sign + _exponent(digits, point, min_exp_digits=1 if point - 1 < 0 else 2)
    return sign + _fixed(digits, point)


# ---------------------------------------------------------------------------------------------
# Type names and quoting


def go_type_name(value: Any) -> str:
    """The Go type a Python value stands for, as fmt prints it in ``%!verb(type=value)``."""
    if value is None:
        return "<nil>"
    for python_type, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float64"),
        (str, "string"),
        (bytes, "[]uint8"),
        (list, "[]interface {}"),
        (tuple, "[]interface {}"),
        (dict, "map[string]interface {}"),
    ):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's strconv.Quote: a double-quoted string with Go escapes, printable characters kept."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# fmt: %v and friends


@dataclass(slots=True)
class Spec:
    """Flags, width and precision of one printf directive."""

    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    precision: int | None = None


_PLAIN = Spec()


def _pad(text: str, spec: Spec, *, numeric: bool = False) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    if spec.minus:
        return text.ljust(spec.width)
    if spec.zero and numeric and not text.endswith(("Inf", "NaN")):
        sign = text[0] if text[:1] in "+- " else ""
        return sign + text[len(sign) :].rjust(spec.width - len(sign), "0")
    return text.rjust(spec.width)


def _signed(body: str, negative: bool, spec: Spec) -> str:
    if negative:
        return "-" + body
    if spec.plus:
        return "+" + body
    return " " + body if spec.space else body


def _bad_verb(verb: str, value: Any) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type_name(value)}={format_value(value, 'v')})"


def _format_int(value: int, verb: str, spec: Spec) -> str:
    if verb == "c":
        return _pad(chr(value), spec)
    if verb == "q":
        return _pad("'" + go_quote(chr(value))[1:-1].replace("'", "\\'") + "'", spec)
    if verb == "U":
        return _pad(f"U+{value:04X}", spec)
    if verb in "eEfFgG":
        return _format_float(float(value), verb, spec)
    bases = {"d": (10, ""), "v": (10, ""), "b": (2, "0b"), "o": (8, "0"), "O": (8, "0o")}
    bases |= {"x": (16, "0x"), "X": (16, "0X")}
    if verb not in bases:
        return _bad_verb(verb, value)
    base, prefix = bases[verb]
    body = {10: "{:d}", 2: "{:b}", 8: "{:o}", 16: "{:x}"}[base].format(abs(value))
    if verb == "X":
        body = body.upper()
    if spec.precision is not None:
        body = body.rjust(spec.precision, "0")
    if verb == "O" or (spec.sharp and verb in "bxXo"):
        body = prefix + body
    return _pad(_signed(body, value < 0, spec), spec, numeric=spec.precision is None)


def _format_float(value: float, verb: str, spec: Spec) -> str:
    if verb not in "vgGeEfF":
        return _bad_verb(verb, value)
    special = _special_float(value)
    negative = math.copysign(1.0, value) < 0
    if special is not None:
        body = special.lstrip("+-")
    elif verb in "vgG" and spec.precision is None:
        body = float_v(abs(value))
    else:
        precision = 6 if spec.precision is None else spec.precision
        body = format(abs(value), f".{precision}{'g' if verb == 'v' else verb}")
    if verb in "GE":
        body = body.upper()
    return _pad(_signed(body, negative and not math.isnan(value), spec), spec, numeric=True)


def _format_str(text: str, verb: str, spec: Spec) -> str:
    if verb in "sv":
        body = text if spec.precision is None else text[: spec.precision]
    elif verb == "q":
        body = go_quote(text)
    elif verb in "xX":
        body = text.encode("utf-8", "surrogateescape").hex()
        body = body.upper() if verb == "X" else body
    else:
        return _bad_verb(verb, text)
    return _pad(body, spec)


def _format_struct(value: Any, verb: str) -> str:
    parts = [format_value(getattr(value, f.name), verb) for f in dataclasses.fields(value)]
    return "{" + " ".join(parts) + "}"


def sorted_items(mapping: dict[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return sorted(mapping.items(), key=lambda item: item[0])
    except TypeError:  # mixed key types: Go maps cannot have those; keep insertion order
        return list(mapping.items())


def format_value(value: Any, verb: str = "v", spec: Spec = _PLAIN) -> str:
    """One operand formatted the way Go's fmt formats it for `verb`."""
    stringer = getattr(value, "go_string", None)
    if callable(stringer) and verb in "vsqxX":
        return _format_str(stringer(), verb, spec)
    if value is None:
        return _pad("<nil>", spec) if verb in "vs" else _bad_verb(verb, value)
    if isinstance(value, bool):
        return _pad("true" if value else "false", spec) if verb in "tv" else _bad_verb(verb, value)
    if isinstance(value, int):
        return _format_int(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    if isinstance(value, str):
        return _format_str(value, verb, spec)
    if isinstance(value, bytes):
        if verb in "sqxX":
            return _format_str(value.decode("utf-8", "replace"), verb, spec)
        return _pad("[" + " ".join(str(b) for b in value) + "]", spec)
    if isinstance(value, list | tuple):
        return _pad("[" + " ".join(format_value(item, verb) for item in value) + "]", spec)
    if isinstance(value, dict):
        items = sorted_items(value)
        body = " ".join(f"{format_value(k, verb)}:{format_value(v, verb)}" for k, v in items)
        return _pad(f"map[{body}]", spec)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _pad(_format_struct(value, verb), spec)
    return _pad(str(value), spec)


def sprint(args: list[Any]) -> str:
    """fmt.Sprint: spaces between operands when neither side is a string."""
    out: list[str] = []
    previous_is_string = False
    for index, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if index > 0 and not is_string and not previous_is_string:
            out.append(" ")
        out.append(format_value(arg))
        previous_is_string = is_string
    return "".join(out)


def sprintln(args: list[Any]) -> str:
    """fmt.Sprintln: always a space between operands, and a newline at the end."""
    return " ".join(format_value(arg) for arg in args) + "\n"


# Go's fmt refuses widths and precisions beyond a million (fmt/print.go, tooLarge): a literal
# that grows past it swallows the rest of the format (then "%!(NOVERB)"), a `*` argument past it
# writes "%!(BADWIDTH)" / "%!(BADPREC)". So a template cannot build a 20,000,000-column string.
_FMT_MAX = 1_000_000


def _too_large(value: int) -> bool:
    return value > _FMT_MAX or value < -_FMT_MAX


def _parse_number(fmt: str, index: int) -> tuple[int | None, int]:
    """Go's parsenum: digits at `index`; past the limit, nothing and the end of the format."""
    num, start = 0, index
    while index < len(fmt) and fmt[index].isdigit():
        if _too_large(num):
            return None, len(fmt)
        num = num * 10 + int(fmt[index])
        index += 1
    return (num if index > start else None), index


def _int_arg(args: list[Any], arg_index: int) -> tuple[int | None, int]:
    """Go's intFromArg: the next argument if it is an int within the limit."""
    if arg_index >= len(args):
        return None, arg_index
    value = args[arg_index]
    if not isinstance(value, int) or isinstance(value, bool) or _too_large(value):
        return None, arg_index + 1
    return value, arg_index + 1


def _read_spec(fmt: str, index: int, args: list[Any], arg_index: int) -> tuple[Spec, int, int, str]:
    """Flags, width and precision at `index`; also what Go writes for a bad `*` argument."""
    spec = Spec()
    notes = ""
    flags = {"+": "plus", "-": "minus", "#": "sharp", " ": "space", "0": "zero"}
    while index < len(fmt) and fmt[index] in flags:
        setattr(spec, flags[fmt[index]], True)
        index += 1
    if index < len(fmt) and fmt[index] == "*":
        spec.width, arg_index = _int_arg(args, arg_index)
        index += 1
        if spec.width is None:
            notes += "%!(BADWIDTH)"
        elif spec.width < 0:  # a negative width means "pad on the right"
            spec.width, spec.minus, spec.zero = -spec.width, True, False
    else:
        spec.width, index = _parse_number(fmt, index)
    if index + 1 < len(fmt) and fmt[index] == ".":
        index += 1
        if fmt[index] == "*":
            spec.precision, arg_index = _int_arg(args, arg_index)
            index += 1
            if spec.precision is not None and spec.precision < 0:
                spec.precision = None
            if spec.precision is None:
                notes += "%!(BADPREC)"
        else:
            precision, index = _parse_number(fmt, index)
            spec.precision = precision or 0
    return spec, index, arg_index, notes


def sprintf(fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf for the verbs templates use, with Go's ``%!verb(MISSING)``/``EXTRA`` notes."""
    out: list[str] = []
    index = arg_index = 0
    while index < len(fmt):
        percent = fmt.find("%", index)
        if percent < 0:
            out.append(fmt[index:])
            break
        out.append(fmt[index:percent])
        spec, index, arg_index, notes = _read_spec(fmt, percent + 1, args, arg_index)
        out.append(notes)
        if index >= len(fmt):
            out.append("%!(NOVERB)")
            break
        verb = fmt[index]
        index += 1
        if verb == "%":
            out.append("%")
        elif arg_index >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(format_value(args[arg_index], verb, spec))
            arg_index += 1
    if arg_index < len(args):
        extra = ", ".join(f"{go_type_name(a)}={format_value(a)}" for a in args[arg_index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# encoding/json


class RawJSON(str):
    """Already-encoded JSON, written as is (Go's ``json.RawMessage``), e.g. an ordered object."""

    __slots__ = ()


def _json_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\n\r\t\b\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}[char])
        elif code < 0x20 or char in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")  # Go escapes <, >, & so JSON is safe inside HTML
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")  # a lone surrogate is invalid UTF-8 to Go
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _is_empty(value: Any) -> bool:
    """Go's omitempty test: false, 0, "", nil, and empty slices and maps."""
    if value is None:
        return True
    if isinstance(value, bool | int | float):
        return not value
    if isinstance(value, str | bytes | list | tuple | dict):
        return len(value) == 0
    return False


def _json_struct(value: Any) -> str:
    members: list[str] = []
    for field in dataclasses.fields(value):
        tag = field.metadata.get("json", "")
        if tag == "-":
            continue
        name, _, options = tag.partition(",")
        item = getattr(value, field.name)
        if "omitempty" in options.split(",") and _is_empty(item):
            continue
        members.append(f"{_json_string(name or field.name)}:{marshal_json(item)}")
    return "{" + ",".join(members) + "}"


def marshal_json(value: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, struct fields in order.

    Raises ValueError for what Go refuses too (NaN, infinities, types with no JSON form).
    """
    marshaler = getattr(value, "go_json", None)
    if callable(marshaler):
        return marshal_json(marshaler())
    if value is None:
        return "null"
    if isinstance(value, RawJSON):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bytes):
        return _json_string(base64.b64encode(value).decode("ascii"))
    if isinstance(value, list | tuple):
        return "[" + ",".join(marshal_json(item) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(((str(k), v) for k, v in value.items()), key=lambda item: item[0])
        return "{" + ",".join(f"{_json_string(k)}:{marshal_json(v)}" for k, v in items) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_struct(value)
    raise ValueError(f"json: unsupported type: {type(value).__name__}")
