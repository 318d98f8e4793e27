"""Evaluator and builtin functions for :mod:`.gotemplate` (Go's ``text/template`` exec half).

Semantics follow Go: Go truthiness (empty strings, lists, maps, zero numbers and nil are false),
``and`` / ``or`` short-circuit and return the deciding argument, ``range`` over maps goes in sorted
key order, variables are scoped to the enclosing control structure and ``$x = v`` assigns to the
nearest one, and a missing map key is the zero value (printed ``<no value>``, as with Ollama's
``missingkey=zero``).

Python values map to Go: ``dict`` is a map, ``list``/``tuple`` a slice, other objects are structs
whose exported (capitalised) attributes are fields and whose bound methods are methods. Lower-case
attributes are never reachable, so a template cannot poke at Python internals.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .gotemplate_fmt import format_value, go_type_name, sorted_items
from .gotemplate_funcs import LAZY_FUNCTIONS, Function, truth
from .gotemplate_lex import DEFAULT_LIMITS, RenderLimits, TemplateError, error_at
from .gotemplate_parse import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    ParsedTemplate,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)

YIELD_EVERY = 0xFF  # nodes walked between two GIL hand-offs and deadline checks (a mask)
MAX_TEMPLATE_DEPTH = 50  # nested {{template}} calls; Python's stack runs out long before Go's


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_NO_FINAL = object()  # "nothing piped in", distinct from a piped-in nil


class Executor:
    """Renders one parsed template against one data value. Not reused between renders.

    `limits` bound the render: the clock is read at every node walked, so a template whose
    ``define``s call each other twice per level (2^depth calls from a few hundred bytes) or
    ranges over a huge integer stops at the deadline; the output and every string a function
    builds (``printf`` with a wide width, ``print`` doubling a variable) are counted against the
    size limit. Both raise `TemplateLimitExceeded` (400).
    """

    def __init__(
        self,
        source: str,
        parsed: ParsedTemplate,
        functions: Mapping[str, Function],
        limits: RenderLimits = DEFAULT_LIMITS,
    ) -> None:
        self.source = source
        self.parsed = parsed
        self.functions = functions
        self.limits = limits
        self.deadline = limits.deadline()
        self.size = 0
        self.steps = 0
        self.out: list[str] = []
        self.vars: list[list[Any]] = []  # [name, value] pairs, innermost scope last
        self.depth = 0

    def run(self, data: Any) -> str:
        self.vars = [["$", data]]
        try:
            self._walk(data, self.parsed.root)
        except RecursionError:
            raise TemplateError("template nesting too deep") from None
        return "".join(self.out)

    def _fail(self, node: Node, message: str) -> TemplateError:
        return error_at(self.source, node.pos, message)

    # walking ---------------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limits.max_chars:
            raise self.limits.too_big()
        self.out.append(text)

    def _walk(self, dot: Any, node: Node) -> None:
        self.steps += 1
        if not self.steps & YIELD_EVERY:
            # Renders run on a worker thread: hand the GIL to the event loop now and then, so
            # a long render costs the loop microseconds, not a 5 ms switch interval each time.
            time.sleep(0)
            if time.monotonic() > self.deadline:
                raise self.limits.too_long()
        if isinstance(node, TextNode):
            self._emit(node.text)
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self._walk(dot, child)
        elif isinstance(node, ActionNode):
            value = self._eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self._emit("<no value>" if value is None else format_value(value))
        elif isinstance(node, IfNode | WithNode):
            self._walk_if_or_with(dot, node)
        elif isinstance(node, RangeNode):
            self._walk_range(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        elif isinstance(node, TemplateNode):
            self._walk_template(dot, node)
        else:
            raise self._fail(node, f"unknown node: {type(node).__name__}")

    def _walk_if_or_with(self, dot: Any, node: IfNode | WithNode) -> None:
        mark = len(self.vars)
        try:
            value = self._eval_pipeline(dot, node.pipe)
            if truth(value):
                self._walk(dot if isinstance(node, IfNode) else value, node.body)
            elif node.else_body is not None:
                self._walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def _range_items(self, node: RangeNode, value: Any) -> Iterable[tuple[Any, Any]]:
        if value is None:
            return []  # like Go, a nil collection is simply empty
        if isinstance(value, list | tuple):
            return list(enumerate(value))
        if isinstance(value, dict):
            return sorted_items(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                raise self._fail(node, f"can't use {value} to iterate over more than one variable")
            return _IntRange(value)  # lazy: `range 1000000000` costs nothing until walked
        raise self._fail(node, f"range can't iterate over {format_value(value)}")

    def _walk_range(self, dot: Any, node: RangeNode) -> None:
        mark = len(self.vars)
        try:
            value = self._eval_pipeline(dot, node.pipe)
            items = self._range_items(node, value)
            if not items:
                if node.else_body is not None:
                    self._walk(dot, node.else_body)
                return
            body_mark = len(self.vars)
            for key, element in items:
                self._bind_range_vars(node.pipe, body_mark, key, element)
                try:
                    self._walk(element, node.body)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    del self.vars[body_mark:]
        finally:
            del self.vars[mark:]

    def _bind_range_vars(self, pipe: PipeNode, body_mark: int, key: Any, element: Any) -> None:
        values = [key, element] if len(pipe.decl) == 2 else [element]
        for offset, (name, value) in enumerate(zip(pipe.decl, values, strict=False)):
            if pipe.is_assign:
                self._set_var(name, value)
            else:
                self.vars[body_mark - len(pipe.decl) + offset][1] = value

    def _walk_template(self, dot: Any, node: TemplateNode) -> None:
        body = self.parsed.defines.get(node.name)
        if body is None:
            raise self._fail(node, f'no such template "{node.name}"')
        if self.depth >= MAX_TEMPLATE_DEPTH:
            raise self._fail(node, "exceeded maximum template depth")
        value = self._eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        saved_vars = self.vars
        self.vars = [["$", value]]
        self.depth += 1
        try:
            self._walk(value, body)
        finally:
            self.vars = saved_vars
            self.depth -= 1

    # variables -------------------------------------------------------------------------------

    def _var_value(self, node: Node, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self._fail(node, f"undefined variable: {name}")

    def _set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise TemplateError(f"undefined variable: {name}")

    # pipelines and commands ------------------------------------------------------------------

    def _eval_pipeline(self, dot: Any, pipe: PipeNode) -> Any:
        value: Any = _NO_FINAL
        for cmd in pipe.cmds:
            value = self._eval_command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self._set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def _eval_command(self, dot: Any, cmd: CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            return self._eval_field_chain(dot, dot, first, first.idents, cmd.args, final)
        if isinstance(first, ChainNode):
            return self._eval_chain(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self._eval_function(dot, first, cmd.args, final)
        if isinstance(first, VariableNode):
            return self._eval_variable(dot, first, cmd.args, final)
        self._not_a_function(first, cmd.args, final)
        if isinstance(first, PipeNode):
            return self._eval_pipeline(dot, first)
        if isinstance(first, NilNode):
            raise self._fail(first, "nil is not a command")
        return self._eval_arg(dot, first)

    def _not_a_function(self, node: Node, args: Sequence[Node], final: Any) -> None:
        if len(args) > 1 or final is not _NO_FINAL:
            raise self._fail(node, "can't give argument to non-function")

    def _eval_arg(self, dot: Any, node: Node) -> Any:
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, BoolNode | NumberNode | StringNode):
            return node.value
        if isinstance(node, FieldNode):
            return self._eval_field_chain(dot, dot, node, node.idents, (node,), _NO_FINAL)
        if isinstance(node, VariableNode):
            return self._eval_variable(dot, node, (node,), _NO_FINAL)
        if isinstance(node, PipeNode):
            return self._eval_pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self._eval_function(dot, node, (node,), _NO_FINAL)
        if isinstance(node, ChainNode):
            return self._eval_chain(dot, node, (node,), _NO_FINAL)
        raise self._fail(node, f"can't handle {type(node).__name__} as an argument")

    def _eval_variable(self, dot: Any, node: VariableNode, args: Sequence[Node], final: Any) -> Any:
        value = self._var_value(node, node.name)
        if not node.fields:
            self._not_a_function(node, args, final)
            return value
        return self._eval_field_chain(dot, value, node, node.fields, args, final)

    def _eval_chain(self, dot: Any, node: ChainNode, args: Sequence[Node], final: Any) -> Any:
        if isinstance(node.node, NilNode):
            raise self._fail(node, "indirection through explicit nil")
        receiver = self._eval_arg(dot, node.node)
        return self._eval_field_chain(dot, receiver, node, node.fields, args, final)

    def _eval_field_chain(
        self,
        dot: Any,
        receiver: Any,
        node: Node,
        idents: Sequence[str],
        args: Sequence[Node],
        final: Any,
    ) -> Any:
        for ident in idents[:-1]:
            receiver = self._eval_field(dot, ident, node, (node,), _NO_FINAL, receiver)
        return self._eval_field(dot, idents[-1], node, args, final, receiver)

    def _eval_field(
        self,
        dot: Any,
        name: str,
        node: Node,
        args: Sequence[Node],
        final: Any,
        receiver: Any,
    ) -> Any:
        if receiver is None:
            return None  # a field of a missing value is missing too (Go: zero of nil data)
        has_args = len(args) > 1 or final is not _NO_FINAL
        if isinstance(receiver, dict):
            if has_args:
                raise self._fail(node, f"{name} is not a method but has arguments")
            return receiver.get(name)
        if name[:1].isupper() and not isinstance(
            receiver, str | bytes | int | float | list | tuple
        ):
            attribute = getattr(receiver, name, _NO_FINAL)
            if inspect.ismethod(attribute):
                argv = [self._eval_arg(dot, arg) for arg in args[1:]]
                if final is not _NO_FINAL:
                    argv.append(final)
                return self._invoke(node, name, Function.wrap(attribute), argv)
            if attribute is not _NO_FINAL:
                if has_args:
                    raise self._fail(
                        node, f"{name} has arguments but cannot be invoked as function"
                    )
                return attribute
        raise self._fail(node, f"can't evaluate field {name} in type {go_type_name(receiver)}")

    def _eval_function(
        self, dot: Any, node: IdentifierNode, args: Sequence[Node], final: Any
    ) -> Any:
        if node.name in LAZY_FUNCTIONS:
            return self._eval_and_or(dot, node, args[1:], final)
        function = self.functions.get(node.name)
        if function is None:
            raise self._fail(node, f'function "{node.name}" not defined')
        argv = [self._eval_arg(dot, arg) for arg in args[1:]]
        if final is not _NO_FINAL:
            argv.append(final)
        return self._invoke(node, node.name, function, argv)

    def _eval_and_or(self, dot: Any, node: IdentifierNode, args: Sequence[Node], final: Any) -> Any:
        if not args and final is _NO_FINAL:
            raise self._fail(node, f"wrong number of args for {node.name}: want at least 1 got 0")
        stop_when = (
            node.name == "or"
        )  # "or" stops at the first true value, "and" at the first false
        value: Any = None
        for arg in args:  # evaluated one by one: the rest is skipped once the result is known
            value = self._eval_arg(dot, arg)
            if truth(value) == stop_when:
                return value
        return final if final is not _NO_FINAL else value

    def _invoke(self, node: Node, name: str, function: Function, argv: list[Any]) -> Any:
        count = len(argv)
        if count < function.min_args or (
            function.max_args is not None and count > function.max_args
        ):
            want = (
                f"at least {function.min_args}"
                if function.max_args is None
                else str(function.max_args)
            )
            raise self._fail(node, f"wrong number of args for {name}: want {want} got {count}")
        try:
            result = function.call(*argv)
        except TemplateError:
            raise
        except Exception as exc:
            raise self._fail(node, f"error calling {name}: {exc}") from exc
        if isinstance(result, str) and len(result) > self.limits.max_chars:
            raise self.limits.too_big()
        return result


class _IntRange:
    """`range N` over an integer as (index, value) pairs, made one at a time."""

    def __init__(self, count: int) -> None:
        self._range = range(max(count, 0))

    def __bool__(self) -> bool:
        return bool(self._range)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((value, value) for value in self._range)
