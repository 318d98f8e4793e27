"""Tool-call and thinking tags read from Go templates, and the capabilities they give, as Ollama
infers them."""

from __future__ import annotations

import pytest
from family_templates import LLAMA31, MISTRAL, QWEN3, R1, command_r
from hana_server.store.model import template_capabilities
from hana_server.store.template_tags import thinking_tags, tool_call_tag


@pytest.mark.parametrize(
    ("template", "tag", "tags", "capabilities"),
    [
        (LLAMA31, "{", None, ["tools"]),
        (QWEN3, "<tool_call>", ("<think>", "</think>"), ["tools", "thinking"]),
        (R1, "{", ("<think>", "</think>"), ["thinking"]),
        (MISTRAL, "[TOOL_CALLS] [", None, ["tools"]),
    ],
)
def test_family_templates(
    template: str, tag: str, tags: tuple[str, str] | None, capabilities: list[str]
) -> None:
    assert tool_call_tag(template) == tag
    assert thinking_tags(template) == tags
    assert template_capabilities(template) == capabilities


def test_command_r() -> None:
    template = command_r()
    if template is None:
        pytest.skip("the conformance templates are not on this machine")
    assert tool_call_tag(template) == "Action: ```json\n["
    assert template_capabilities(template) == ["tools"]


@pytest.mark.parametrize(
    ("template", "tag"),
    [
        ("{{ .Prompt }}", "{"),
        ("", "{"),
        ("{{ if .ToolCalls }}   {{ end }}", "{"),
        ("{{ range .Messages }}{{ if $.Tools }}x{{ end }}{{ end }}", "{"),
        ('{{ define "t" }}{{ if .ToolCalls }}<call>{{ end }}{{ end }}', "<call>"),
        ("{{ range .Messages }}{{ with .ToolCalls }}<w>{{ end }}{{ end }}", "{"),  # if only
        ('{{ if (and .ToolCalls $.Tools) }}\n  <fn> {"x"{{ end }}', "<fn>"),
        ("{{ if", "{"),  # does not parse: the default
    ],
)
def test_tool_call_tag_rules(template: str, tag: str) -> None:
    assert tool_call_tag(template) == tag


@pytest.mark.parametrize(
    ("template", "tags"),
    [
        # printed outside a range over .Messages: not a thinking template
        ("<think>{{ .Thinking }}</think>", None),
        ("{{ range .Messages }}<t>{{ .Thinking }}</t>{{ end }}", ("<t>", "</t>")),
        ("{{ range .Messages }}{{ if .Thinking }}x{{ end }}{{ end }}", None),  # never printed
        ("{{ range .Messages }}<t>{{ .Thinking }}{{ end }}", None),  # one text only
        ("{{ range $m := .Messages }}{{ if 1 }}[T] {{ $m.Thinking }} [/T]{{ end }}{{ end }}",
         ("[T]", "[/T]")),
    ],
)  # fmt: skip
def test_thinking_tag_rules(template: str, tags: tuple[str, str] | None) -> None:
    assert thinking_tags(template) == tags


def test_capabilities_from_gguf_jinja_and_family() -> None:
    assert template_capabilities(None, "{% for t in tools %}{% endfor %}") == ["tools"]
    assert template_capabilities(None, "<tool_call>") == ["tools"]
    assert template_capabilities(None, "<think>x</think>") == ["thinking"]
    assert template_capabilities(None, "<think> only") == []
    assert template_capabilities("{{ .Prompt }}", "<think></think>tools") == []  # Go wins
    assert template_capabilities("{{ .Suffix }}{{ .Prompt }}") == ["insert"]
    assert template_capabilities("{{ .Prompt }}", family="gptoss") == ["thinking"]
    assert template_capabilities(None, None, "gpt-oss") == ["thinking"]
