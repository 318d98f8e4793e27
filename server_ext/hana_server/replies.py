"""Which parsers an answer goes through, decided per request the way Ollama decides it.

- Thinking: on a model with the `thinking` capability and a truthy `think` (an absent `think`
  means on). gpt-oss (harmony) is always parsed by channel, even with `think: false`, which it
  cannot honour. Otherwise the tags come from the Go template (store/template_tags.py), or
  `<think>`/`</think>` when a GGUF Jinja template mentions them; a prompt that already ends
  with the opening tag starts the parser inside the thinking.
- Tool calls: when the chat request has tools; the call tag comes from the Go template, or
  `<tool_call>` when a GGUF Jinja template uses it, else `{` (bare JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hana_server.parsers.harmony import HarmonyParser
from hana_server.parsers.reply import ReplyParser, Splitter
from hana_server.parsers.thinking import ThinkingParser
from hana_server.parsers.toolcalls import ToolCallParser
from hana_server.store.model import THINKING_FAMILIES, Model
from hana_server.store.prompt import GoPromptTemplate, JinjaPromptTemplate
from hana_server.store.template_tags import DEFAULT_TOOL_TAG, thinking_tags, tool_call_tag

Think = bool | str | None
JINJA_THINKING = ("<think>", "</think>")


def effective_think(model: Model, think: Think) -> Think:
    """Ollama turns thinking on for a thinking model when the request does not say."""
    if think is None and "thinking" in model.capabilities:
        return True
    return think


def is_harmony(model: Model) -> bool:
    return model.family in THINKING_FAMILIES


def reply_parser(
    model: Model,
    template: object,
    *,
    prompt: str,
    think: Think,
    tools: list[Mapping[str, Any]] | None = None,
    chat: bool = True,
) -> ReplyParser:
    """The parser for one answer; `template` rendered `prompt` (None: a raw prompt, parsed by
    the model's own Go template)."""
    go_template = model.template if template is None else None
    jinja_template = None
    if isinstance(template, GoPromptTemplate):
        go_template = template.source
    elif isinstance(template, JinjaPromptTemplate):
        jinja_template = template.source
    thinking: Splitter | None = None
    if is_harmony(model):
        thinking = HarmonyParser()
    elif think and "thinking" in model.capabilities:
        tags = thinking_tags(go_template) if go_template else None
        if tags is None and jinja_template and all(t in jinja_template for t in JINJA_THINKING):
            tags = JINJA_THINKING
        if tags is not None:
            opening, closing = tags
            thinking = ThinkingParser(
                opening, closing, start_thinking=prompt.rstrip().endswith(opening)
            )
    calls = None
    if tools and not is_harmony(model):
        if go_template:
            tag = tool_call_tag(go_template)
        elif jinja_template and "<tool_call>" in jinja_template:
            tag = "<tool_call>"
        else:
            tag = DEFAULT_TOOL_TAG
        calls = ToolCallParser(tools, tag)
    return ReplyParser(thinking, calls, chat=chat)


def strip_old_thinking(model: Model, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama drops `<think>…</think>` from assistant turns before the last user message, for
    the qwen3 family and deepseek-r1 models (their templates do not expect old thoughts)."""
    if model.family != "qwen3" and "deepseek-r1" not in model.name.model:
        return messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return [
        {**m, "content": _without_think(m.get("content") or "")}
        if i < last_user and m.get("role") == "assistant"
        else m
        for i, m in enumerate(messages)
    ]


def _without_think(text: str) -> str:
    out, at = [], 0
    while (start := text.find("<think>", at)) >= 0:
        end = text.find("</think>", start)
        if end < 0:
            break
        out.append(text[at:start])
        at = end + len("</think>")
        while at < len(text) and text[at].isspace():  # with the whitespace after it
            at += 1
    out.append(text[at:])
    return "".join(out)
