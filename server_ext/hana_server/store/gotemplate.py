"""Go ``text/template`` for Ollama prompt templates, in pure Python.

Ollama model manifests carry their prompt template as Go template source. ``GoTemplate(source)``
parses it once (a syntax error raises `TemplateError` with line and column) and ``.render(data)``
executes it with Go's semantics, so a model renders the same prompt here as under Ollama, byte for
byte.

    >>> GoTemplate("{{- range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}").render(
    ...     {"Messages": [{"Role": "user", "Content": "hi"}]})
    '<user>hi'

Supported: text and actions, trim markers, comments, fields on dicts and objects, ``$``, variables
(``:=`` and ``=``), ``if``/``else if``/``with``/``range`` (with ``else``, ``break``, ``continue``),
``define``/``template``/``block``, pipelines and parenthesised calls, Go's builtin functions and
Ollama's (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``). The syntax lives in
:mod:`.gotemplate_parse`, execution in :mod:`.gotemplate_exec`, Go's value formatting in
:mod:`.gotemplate_fmt`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .gotemplate_exec import Executor
from .gotemplate_funcs import BUILTINS, Function
from .gotemplate_lex import DEFAULT_LIMITS, RenderLimits, TemplateError, TemplateLimitExceeded
from .gotemplate_parse import (
    ActionNode,
    BranchNode,
    FieldNode,
    ListNode,
    Node,
    ParsedTemplate,
    Parser,
    PipeNode,
    TemplateNode,
    VariableNode,
)

__all__ = ["GoTemplate", "RenderLimits", "TemplateError", "TemplateLimitExceeded"]


class GoTemplate:
    """A parsed Go template: immutable, so one instance may be cached and shared between threads."""

    def __init__(
        self, source: str, *, funcs: Mapping[str, Callable[..., Any]] | None = None
    ) -> None:
        """Parse `source`; `funcs` adds functions the way Go's ``Template.Funcs`` does."""
        self.source = source
        self._functions: dict[str, Function] = dict(BUILTINS)
        for name, func in (funcs or {}).items():
            self._functions[name] = Function.wrap(func)
        self._parsed = Parser(source, self._functions).parse()

    @classmethod
    def _from_parsed(cls, template: GoTemplate, parsed: ParsedTemplate) -> GoTemplate:
        clone = cls.__new__(cls)
        clone.source = template.source
        clone._functions = template._functions
        clone._parsed = parsed
        return clone

    def render(self, data: Any, limits: RenderLimits = DEFAULT_LIMITS) -> str:
        """Execute the template with `data` as ``.`` and ``$``; raises `TemplateError`, or
        `TemplateLimitExceeded` when the render runs past `limits`."""
        return Executor(self.source, self._parsed, self._functions, limits).run(data)

    @property
    def parsed(self) -> ParsedTemplate:
        """The syntax tree (immutable), for analyses such as store/template_tags.py."""
        return self._parsed

    def identifiers(self) -> frozenset[str]:
        """Lower-cased field and variable names the template mentions (Ollama's ``Template.Vars``).

        Ollama uses this to decide how to fill a template: one that mentions ``messages`` gets the
        whole conversation; otherwise it gets ``.System``/``.Prompt``/``.Response`` turn by turn.
        """
        names: set[str] = set()
        for body in (self._parsed.root, *self._parsed.defines.values()):
            names.update(name.lower() for name in _identifiers(body))
        return frozenset(names)

    def truncated_after_field(self, name: str) -> GoTemplate:
        """A copy that ends at the first action printing field `name` (Ollama's ``.Response`` cut).

        Everything after that field, in document order, is dropped: later text, actions, and any
        else branch that would follow it. Ollama renders the last turn of a legacy (no
        ``.Messages``) template this way, so the prompt stops where the model is to continue.
        """
        cutter = _Cutter(name)
        root = cutter.walk(self._parsed.root)
        assert isinstance(
            root, ListNode
        )  # the root is only dropped once cut, and it is walked first
        return GoTemplate._from_parsed(self, ParsedTemplate(root, self._parsed.defines))

    def __repr__(self) -> str:
        return f"GoTemplate({self.source!r})"


def _identifiers(node: Node | None) -> Iterator[str]:
    """Field and variable identifiers in the order Ollama's ``Identifiers`` walk finds them."""
    if isinstance(node, ListNode):
        for child in node.nodes:
            yield from _identifiers(child)
    elif isinstance(node, ActionNode | TemplateNode):
        yield from _identifiers(node.pipe)
    elif isinstance(node, BranchNode):
        yield from _identifiers(node.pipe)
        yield from _identifiers(node.body)
        yield from _identifiers(node.else_body)
    elif isinstance(node, PipeNode):
        for cmd in node.cmds:
            for arg in cmd.args:
                yield from _identifiers(arg)
    elif isinstance(node, FieldNode):
        yield from node.idents
    elif isinstance(node, VariableNode):
        yield node.name
        yield from node.fields


class _Cutter:
    """Ollama's ``deleteNode`` walk: keep nodes until field `name` is met, then drop the rest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cut = False

    def _drop(self, node: Node) -> bool:
        if isinstance(node, FieldNode) and self.name in node.idents:
            self.cut = True
            return False
        return self.cut

    def walk(self, node: Node) -> Node | None:
        if self._drop(node):
            return None
        if isinstance(node, ListNode):
            kept = tuple(child for c in node.nodes if (child := self.walk(c)) is not None)
            return dataclasses.replace(node, nodes=kept)
        if isinstance(node, BranchNode):
            # The condition is not searched, only the branches (as in Ollama). An else branch
            # reached after the cut is dropped, where Go's type assertion would panic.
            body = self.walk(node.body)
            else_body = self.walk(node.else_body) if node.else_body is not None else None
            return dataclasses.replace(
                node,
                body=body if isinstance(body, ListNode) else ListNode(node.body.pos, ()),
                else_body=else_body if isinstance(else_body, ListNode) else None,
            )
        if isinstance(node, ActionNode):
            pipe = self.walk(node.pipe)
            return dataclasses.replace(node, pipe=pipe) if isinstance(pipe, PipeNode) else None
        if isinstance(node, PipeNode):
            return self._walk_pipe(node)
        return node

    def _walk_pipe(self, pipe: PipeNode) -> PipeNode | None:
        cmds = []
        for cmd in pipe.cmds:
            args = tuple(kept for arg in cmd.args if (kept := self.walk(arg)) is not None)
            if not args:
                return None  # Ollama drops the whole pipeline once a command loses all arguments
            cmds.append(dataclasses.replace(cmd, args=args))
        return dataclasses.replace(pipe, cmds=tuple(cmds)) if cmds else None
