"""What a Go prompt template says about a model's output format, read from its syntax tree as
Ollama reads it: the tag that starts a tool call, and the tags around thinking.

- Tool-call tag: the first `{{ if }}` whose condition mentions `.ToolCalls`; its first non-blank
  text, cut at the first `{` and trimmed (`<tool_call>`, `[TOOL_CALLS] [`); `{` when that leaves
  nothing or no such `if` exists (calls written as bare JSON).
- Thinking tags: the action printing `.Thinking` inside a `range .Messages`; the first and last
  text of the list holding it, trimmed (normally `<think>` and `</think>`). A template that has
  them makes a thinking model.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from hana_server.store.gotemplate import GoTemplate, TemplateError
from hana_server.store.gotemplate_parse import (
    ActionNode,
    BranchNode,
    FieldNode,
    IfNode,
    ListNode,
    Node,
    PipeNode,
    RangeNode,
    TextNode,
    VariableNode,
)

DEFAULT_TOOL_TAG = "{"


def _mentions(pipe: PipeNode | None, field: str) -> bool:
    if pipe is None:
        return False
    for cmd in pipe.cmds:
        for arg in cmd.args:
            if isinstance(arg, FieldNode) and field in arg.idents:
                return True
            if isinstance(arg, VariableNode) and field in arg.fields:
                return True
            if isinstance(arg, PipeNode) and _mentions(arg, field):
                return True
    return False


def _walk(node: Node | None) -> Iterator[Node]:
    """Every node in document order (branch bodies before their else)."""
    if node is None:
        return
    yield node
    if isinstance(node, ListNode):
        for child in node.nodes:
            yield from _walk(child)
    elif isinstance(node, BranchNode):
        yield from _walk(node.body)
        yield from _walk(node.else_body)


def _trees(template: GoTemplate) -> list[ListNode]:
    parsed = template.parsed
    return [parsed.root, *parsed.defines.values()]


def tool_call_tag_of(template: GoTemplate) -> str:
    for tree in _trees(template):
        for node in _walk(tree):
            if isinstance(node, IfNode) and _mentions(node.pipe, "ToolCalls"):
                for inner in _walk(node.body):
                    if isinstance(inner, TextNode) and inner.text.strip():
                        text = inner.text.split("{", 1)[0].strip()
                        return text or DEFAULT_TOOL_TAG
                return DEFAULT_TOOL_TAG
    return DEFAULT_TOOL_TAG


def _thinking_in(node: ListNode, in_messages: bool) -> tuple[str, str] | None:
    for child in node.nodes:
        if (
            in_messages
            and isinstance(child, ActionNode)
            and not child.pipe.decl
            and _mentions(child.pipe, "Thinking")
        ):
            texts = [c.text.strip() for c in node.nodes if isinstance(c, TextNode)]
            if len(texts) >= 2 and texts[0] and texts[-1] and texts[0] != texts[-1]:
                return texts[0], texts[-1]
            return None
        if isinstance(child, BranchNode):
            inside = in_messages or (
                isinstance(child, RangeNode) and _mentions(child.pipe, "Messages")
            )
            for body in (child.body, child.else_body):
                if body is not None and (found := _thinking_in(body, inside)):
                    return found
    return None


def thinking_tags_of(template: GoTemplate) -> tuple[str, str] | None:
    for tree in _trees(template):
        if found := _thinking_in(tree, False):
            return found
    return None


@lru_cache(maxsize=128)
def parsed_template(source: str) -> GoTemplate | None:
    """`source` parsed (cached: capabilities are asked for on every listing), None if invalid."""
    try:
        return GoTemplate(source)
    except TemplateError:
        return None


def tool_call_tag(source: str | None) -> str:
    """The text that starts a tool call in the output of a model with template `source`."""
    template = parsed_template(source) if source else None
    return tool_call_tag_of(template) if template is not None else DEFAULT_TOOL_TAG


def thinking_tags(source: str | None) -> tuple[str, str] | None:
    """(opening, closing) thinking tags of template `source`, or None if it has none."""
    template = parsed_template(source) if source else None
    return thinking_tags_of(template) if template is not None else None
