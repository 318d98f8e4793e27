"""Lexer for Go ``text/template`` source, and the module's error type.

Splits a template into text and the tokens inside ``{{ }}`` actions, the way Go's
``text/template/parse`` lexer does: trim markers (``{{- `` and `` -}}``: the dash needs a space
beside it) are applied to the neighbouring text here, comments are dropped, and string, character
and number constants are decoded with Go's escape and number rules.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from hana_protocol.errors import HanaError

SPACE_CHARS = " \t\r\n"


class TemplateError(HanaError, ValueError):
    """A template that does not parse or fails while rendering; carries the position when known.

    Status 500, as Ollama answers a request whose template fails.
    """

    status = 500

    def __init__(self, detail: str, *, line: int | None = None, column: int | None = None) -> None:
        self.detail = detail
        self.line = line
        self.column = column
        where = f"{line}:{column}: " if line is not None else ""
        super().__init__(f"template: {where}{detail}")


class TemplateLimitExceeded(TemplateError):
    """A render ran past its time or output limit (`RenderLimits`): the template is refused, as
    any request that asks for more work than a shared server gives one request."""

    status = 400


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """What one render may take: wall time (checked as it runs, on its worker thread) and the
    characters it may produce, in all and in any one value it builds."""

    seconds: float = 2.0
    max_chars: int = 8 << 20

    def deadline(self) -> float:
        return time.monotonic() + self.seconds

    def too_long(self) -> TemplateLimitExceeded:
        return TemplateLimitExceeded(f"rendering took longer than {self.seconds:g}s")

    def too_big(self) -> TemplateLimitExceeded:
        return TemplateLimitExceeded(f"output exceeds {self.max_chars} characters")


DEFAULT_LIMITS = RenderLimits()


def error_at(source: str, pos: int, message: str) -> TemplateError:
    """A `TemplateError` for offset `pos` of `source`, with 1-based line and column."""
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return TemplateError(message, line=line, column=column)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: str
    pos: int


KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?"
    r"|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?)i?"
)
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalnum()


class Lexer:
    """Turns template source into tokens; trim markers are applied to the text tokens here."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.tokens: list[Token] = []
        self.paren_depth = 0

    def run(self) -> list[Token]:
        pos, trim_next_text = 0, False
        while True:
            start = self.src.find("{{", pos)
            text = self.src[pos:] if start < 0 else self.src[pos:start]
            if trim_next_text:
                text = text.lstrip(SPACE_CHARS)
            if start < 0:
                self._emit_text(text, pos)
                break
            inside = start + 2
            if self.src.startswith("-", inside) and self._is_space_at(inside + 1):
                text = text.rstrip(SPACE_CHARS)
                inside += 2
            self._emit_text(text, pos)
            if self.src.startswith("/*", inside):
                pos, trim_next_text = self._skip_comment(inside)
            else:
                self.tokens.append(Token("LEFT", "{{", start))
                pos, trim_next_text = self._lex_action(inside)
        self.tokens.append(Token("EOF", "", len(self.src)))
        return self.tokens

    def _is_space_at(self, pos: int) -> bool:
        """A trim marker is a dash with a space beside it; "{{-3}}" is the number -3."""
        return pos < len(self.src) and self.src[pos] in SPACE_CHARS

    def _emit_text(self, text: str, pos: int) -> None:
        if text:
            self.tokens.append(Token("TEXT", text, pos))

    def _fail(self, pos: int, message: str) -> TemplateError:
        return error_at(self.src, pos, message)

    def _right_delim_at(self, pos: int) -> tuple[int, bool] | None:
        """(end of delimiter, trims following text) if a right delimiter starts at `pos`."""
        if self.src.startswith("}}", pos):
            return pos + 2, False
        if self._is_space_at(pos) and self.src.startswith("-}}", pos + 1):
            return pos + 4, True
        return None

    def _skip_comment(self, pos: int) -> tuple[int, bool]:
        end = self.src.find("*/", pos + 2)
        if end < 0:
            raise self._fail(pos, "unclosed comment")
        delim = self._right_delim_at(end + 2)
        if delim is None:
            raise self._fail(end, "comment ends before closing delimiter")
        return delim

    def _lex_action(self, pos: int) -> tuple[int, bool]:
        src = self.src
        self.paren_depth = 0
        while True:
            if pos >= len(src):
                raise self._fail(pos, "unclosed action")
            if (delim := self._right_delim_at(pos)) is not None:
                if self.paren_depth > 0:
                    raise self._fail(pos, "unclosed left paren")
                self.tokens.append(Token("RIGHT", "}}", pos))
                return delim
            char = src[pos]
            if char in SPACE_CHARS:
                end = pos
                while end < len(src) and src[end] in SPACE_CHARS:
                    end += 1
                if src.startswith("-}}", end):
                    end -= 1  # the last space before "-}}" belongs to the trim marker
                self.tokens.append(Token("SPACE", src[pos:end], pos))
                pos = end
                continue
            pos = self._lex_token(pos, char)

    def _lex_token(self, pos: int, char: str) -> int:
        src = self.src
        simple = {"|": "PIPE", ",": "COMMA", "=": "ASSIGN"}
        if char in simple:
            self.tokens.append(Token(simple[char], char, pos))
            return pos + 1
        if char == ":":
            if not src.startswith(":=", pos):
                raise self._fail(pos, "expected :=")
            self.tokens.append(Token("DECLARE", ":=", pos))
            return pos + 2
        if char == "(":
            self.paren_depth += 1
            self.tokens.append(Token("LPAREN", char, pos))
            return pos + 1
        if char == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                raise self._fail(pos, "unexpected right paren")
            self.tokens.append(Token("RPAREN", char, pos))
            return pos + 1
        if char == '"':
            return self._lex_quoted(pos)
        if char == "`":
            end = src.find("`", pos + 1)
            if end < 0:
                raise self._fail(pos, "unterminated raw quoted string")
            self.tokens.append(Token("STRING", src[pos + 1 : end], pos))
            return end + 1
        if char == "'":
            return self._lex_char(pos)
        if char == "$":
            end = self._scan_alnum(pos + 1)
            self.tokens.append(Token("VARIABLE", src[pos:end], pos))
            return end
        if char == ".":
            nxt = src[pos + 1 : pos + 2]
            if nxt.isdigit():
                return self._lex_number(pos)
            if nxt and _is_alnum(nxt):
                end = self._scan_alnum(pos + 1)
                self.tokens.append(Token("FIELD", src[pos:end], pos))
                return end
            self.tokens.append(Token("DOT", ".", pos))
            return pos + 1
        if char in "+-" or char.isdigit():
            return self._lex_number(pos)
        if _is_alnum(char):
            return self._lex_identifier(pos)
        raise self._fail(pos, f'unrecognized character in action: "{char}"')

    def _scan_alnum(self, pos: int) -> int:
        while pos < len(self.src) and _is_alnum(self.src[pos]):
            pos += 1
        return pos

    def _lex_identifier(self, pos: int) -> int:
        end = self._scan_alnum(pos)
        word = self.src[pos:end]
        nxt = self.src[end : end + 1]
        if nxt and nxt not in SPACE_CHARS + ".,|:()}":
            raise self._fail(end, f'bad character "{nxt}"')
        if word in KEYWORDS:
            kind = "KEYWORD"
        elif word in ("true", "false"):
            kind = "BOOL"
        elif word == "nil":
            kind = "NIL"
        else:
            kind = "IDENT"
        self.tokens.append(Token(kind, word, pos))
        return end

    def _lex_number(self, pos: int) -> int:
        match = _NUMBER.match(self.src, pos)
        end = match.end() if match else pos
        if not match or end == pos or (end < len(self.src) and _is_alnum(self.src[end])):
            bad_end = self._scan_alnum(end) if match else pos + 1
            raise self._fail(pos, f'bad number syntax: "{self.src[pos:bad_end]}"')
        self.tokens.append(Token("NUMBER", self.src[pos:end], pos))
        return end

    def _lex_quoted(self, pos: int) -> int:
        end = pos + 1
        while True:
            if end >= len(self.src) or self.src[end] == "\n":
                raise self._fail(pos, "unterminated quoted string")
            if self.src[end] == "\\":
                end += 2
                continue
            if self.src[end] == '"':
                break
            end += 1
        value = unquote(self.src[pos + 1 : end], '"', lambda msg: self._fail(pos, msg))
        self.tokens.append(Token("STRING", value, pos))
        return end + 1

    def _lex_char(self, pos: int) -> int:
        end = pos + 1
        while end < len(self.src) and self.src[end] != "'":
            if self.src[end] == "\n":
                break
            end += 2 if self.src[end] == "\\" else 1
        if end >= len(self.src) or self.src[end] != "'":
            raise self._fail(pos, "unterminated character constant")
        value = unquote(self.src[pos + 1 : end], "'", lambda msg: self._fail(pos, msg))
        if len(value) != 1:
            raise self._fail(pos, f"malformed character constant: {self.src[pos : end + 1]}")
        self.tokens.append(Token("CHAR", value, pos))
        return end + 1


def unquote(body: str, quote: str, fail: Callable[[str], TemplateError]) -> str:
    """Decode Go escape sequences in the body of a quoted string or character constant."""
    out: list[str] = []
    i = 0
    hex_lengths = {"x": 2, "u": 4, "U": 8}
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc == quote:
            out.append(quote)
            i += 2
        elif esc in hex_lengths:
            digits = body[i + 2 : i + 2 + hex_lengths[esc]]
            if len(digits) != hex_lengths[esc] or not all(
                c in "0123456789abcdefABCDEF" for c in digits
            ):
                raise fail(f"invalid escape \\{esc}{digits}")
            out.append(chr(int(digits, 16)))
            i += 2 + hex_lengths[esc]
        elif esc and esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise fail(f"invalid octal escape \\{digits}")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise fail(f"unknown escape sequence \\{esc}")
    return "".join(out)


def number_value(text: str) -> int | float:
    """The value Go gives a numeric constant used as an argument: float if it looks like one."""
    if text.endswith("i"):
        raise ValueError("complex numbers are not supported")
    clean = text.replace("_", "")
    unsigned = clean.lstrip("+-")
    sign = -1 if clean.startswith("-") else 1
    if unsigned[:2].lower() == "0x":
        if any(c in unsigned for c in ".pP"):
            return sign * float.fromhex(unsigned)
        return sign * int(unsigned, 16)
    if any(c in unsigned for c in ".eE"):
        return sign * float(unsigned)
    if len(unsigned) > 1 and unsigned[0] == "0" and unsigned[1].isdigit():
        return sign * int(unsigned, 8)  # Go reads a leading zero as octal
    return sign * int(unsigned, 0)
