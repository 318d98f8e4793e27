"""A jinja2 sandbox with a clock and a size limit, for GGUF chat templates (they come from files
anyone can publish).

jinja2's immutable sandbox already stops templates from reaching Python internals or changing
their inputs; it does not stop them from running for days or building gigabytes. This one does,
cooperatively (the render runs on a worker thread, which cannot be killed): the deadline of the
render is checked at every call, attribute or item access, loop step (`range` and the request's
lists) and output piece, and every place a template can make a big value is checked before it is
made: `*`, `+`, `**` and `%` on strings, lists and integers, `~` concatenation, padding methods
and filters (`center`, `ljust`, `format`, `indent`, ...) and `replace`. Past a limit the render
raises `TemplateLimitExceeded` (a 400).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from .gotemplate_lex import RenderLimits

_state = threading.local()  # the limits and deadline of the render running on this thread

_MAX_INT_BITS = 1 << 16  # integers a prompt could ever need are far below 65536 bits
_DIGITS = re.compile(r"\d{7,}")  # only numbers of 7 digits or more can pass a size limit
_STAR = re.compile(r"%[-+ #0]*\*|%[-+ #0]*\d*\.\*")


def _limits() -> RenderLimits:
    limits: RenderLimits | None = getattr(_state, "limits", None)
    if limits is None:  # not inside render_limited: a template used some other way
        raise jinja2.TemplateError("chat templates render through render_limited only")
    return limits


def tick() -> None:
    """Fail once the current render is past its deadline; hand the GIL to the event loop now and
    then (renders run on a worker thread)."""
    _state.steps += 1
    if not _state.steps & 0xFF:
        time.sleep(0)
        if time.monotonic() > _state.deadline:
            raise _limits().too_long()


def _check_size(size: int) -> None:
    if size > _limits().max_chars:
        raise _limits().too_big()


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _check_format(fmt: str) -> None:
    """A format (`%` or `{}` style) whose width or precision passes the size limit, or takes it
    from an argument, is refused before it runs."""
    if _STAR.search(fmt) or any(int(n) > _limits().max_chars for n in _DIGITS.findall(fmt)):
        raise _limits().too_big()


def _check_width(args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> None:
    width = args[at] if len(args) > at else kwargs.get("width", 0)
    if isinstance(width, int) and width > _limits().max_chars:
        raise _limits().too_big()


class _CheckedCodeGenerator(CodeGenerator):
    """`a ~ b` through `environment.checked_concat`, so a doubling loop stops at the limit."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class GuardedList(list[Any]):
    """A request's list (messages, tools) whose iteration checks the clock at every item."""

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            tick()
            yield item


def guarded_range(*args: int) -> Iterator[int]:
    """jinja2's safe range (at most MAX_RANGE items), checking the clock at every step."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _limits().too_big()
    for number in numbers:
        tick()
        yield number


def _padding_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_width(args, kwargs, 0)
        return function(value, *args, **kwargs)

    return checked


_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the checks described in the module docstring."""

    code_generator_class = _CheckedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = guarded_range
        self.filters["center"] = _padding_filter(self.filters["center"])
        self.filters["indent"] = _padding_filter(self.filters["indent"])
        self.filters["format"] = self._format_filter(self.filters["format"])

    @staticmethod
    def _format_filter(original: Callable[..., str]) -> Callable[..., str]:
        def checked(value: str, *args: Any, **kwargs: Any) -> str:
            _check_format(str(value))
            return original(value, *args, **kwargs)

        return checked

    def checked_concat(self, values: Iterable[Any]) -> str:
        parts = [str(value) for value in values]
        _check_size(sum(map(len, parts)))
        return "".join(parts)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        tick()
        if operator_ == "*":
            for sequence, count in ((left, right), (right, left)):
                if _sized(sequence) and isinstance(count, int):
                    _check_size(len(sequence) * count)
        elif operator_ == "+" and _sized(left) and _sized(right):
            _check_size(len(left) + len(right))
        elif operator_ == "%" and isinstance(left, str):
            _check_format(left)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if operator_ == "**":
                bits = left.bit_length() * max(right, 0)
            if bits > _MAX_INT_BITS:
                raise _limits().too_big()
        return super().call_binop(context, operator_, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING_METHODS:
                _check_width(args, kwargs, 0)
            elif name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                _check_size(len(owner) + (len(owner) + 1) * len(new) // max(len(old), 1))
            elif name == "join" and args:
                _check_size(sum(_sized(item) + len(owner) for item in args[0]))
            elif name == "format":
                _check_format(owner)
        result = super().call(__context, __obj, *args, **kwargs)
        if _sized(result):
            _check_size(len(result))
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)


def render_limited(
    template: jinja2.Template, variables: dict[str, Any], limits: RenderLimits
) -> str:
    """Render `template` under `limits` on this thread: output counted as it is produced."""
    _state.limits, _state.deadline, _state.steps = limits, limits.deadline(), 0
    try:
        size, parts = 0, []
        for part in template.generate(**variables):
            tick()
            size += len(part)
            if size > limits.max_chars:
                raise limits.too_big()
            parts.append(part)
        return "".join(parts)
    finally:
        _state.limits = None


__all__ = ["GuardedList", "LimitedSandbox", "render_limited", "tick"]
