"""PromptBuilder: template precedence, Ollama's way of filling Go templates, the Jinja path, and the
Ollama template corpus (read from the shared conformance folder at test time, when present)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.gotemplate import TemplateError
from hana_server.store.prompt import (
    Conversation,
    GoPromptTemplate,
    PromptBuilder,
    collate,
    normalize_message,
)
from tiny_gguf import write_tiny_gguf

REPO_ROOT = Path(__file__).resolve().parents[3]
# Data from the Ollama repository, kept beside the project (never copied into it); CI may lack it.
CORPUS = REPO_ROOT.parent / "shared" / "conformance" / "ollama-templates"


@dataclass(frozen=True)
class FakeModel:
    """The attributes of store.Model that prompt rendering reads."""

    template: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeInfo:
    """The attributes of GGUFInfo that prompt rendering reads."""

    architecture: str = "llama"
    chat_template: str | None = None
    kv: dict[str, Any] = field(default_factory=dict)


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


ROLES_TEMPLATE = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
GEMMA3 = FakeInfo(architecture="gemma3")

# ---------------------------------------------------------------------------------------------
# The Ollama template corpus

CORPUS_CASES = {
    "user": [user("Hello, how are you?")],
    "user-assistant-user": [
        user("Hello, how are you?"),
        assistant("I'm doing great. How can I help you today?"),
        user("I'd like to show off how chat templating works!"),
    ],
}
CORPUS_CASES["system-user-assistant-user"] = [
    system("You are a helpful assistant."),
    *CORPUS_CASES["user-assistant-user"],
]
# CASES.md: for these templates one trailing space is dropped before comparing.
TRAILING_SPACE_DROPPED = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}


def corpus_templates() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(path.stem for path in CORPUS.glob("*.gotmpl"))


@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
@pytest.mark.parametrize("name", corpus_templates() or ["(corpus absent)"])
def test_ollama_template_corpus(name: str, case: str) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"Ollama template corpus not found at {CORPUS}")
    template = GoPromptTemplate((CORPUS / f"{name}.gotmpl").read_text())
    messages = [normalize_message(m) for m in CORPUS_CASES[case]]
    rendered = template.render(Conversation(messages))
    if name in TRAILING_SPACE_DROPPED and rendered.endswith(" "):
        rendered = rendered[:-1]
    assert rendered == (CORPUS / "testdata" / f"{name}.gotmpl" / case).read_text()


def test_corpus_templates_render_through_the_builder_with_their_stop_strings() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"Ollama template corpus not found at {CORPUS}")
    source = (CORPUS / "chatml.gotmpl").read_text()
    params = json.loads((CORPUS / "chatml.json").read_text())
    builder = PromptBuilder.for_model(FakeModel(template=source, parameters=params), GEMMA3)
    assert builder.stop == params["stop"]
    assert builder.generate("Hi", system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------------------------------------
# Which template


def test_manifest_template_wins_over_gguf_and_family() -> None:
    info = FakeInfo(architecture="gemma3", chat_template="JINJA {{ messages[0].content }}")
    builder = PromptBuilder.for_model(FakeModel(template=ROLES_TEMPLATE), info)
    assert builder.origin == "modelfile"
    assert builder.generate("hi") == "[user:hi]"


def test_gguf_chat_template_wins_over_family_default() -> None:
    info = FakeInfo(architecture="gemma3", chat_template="JINJA {{ messages[0].content }}")
    builder = PromptBuilder.for_model(FakeModel(), info)
    assert builder.origin == "gguf"
    assert builder.generate("hi") == "JINJA hi"


@pytest.mark.parametrize("architecture", ["gemma", "gemma2", "gemma3"])
def test_gemma_family_default_uses_gemma_turns(architecture: str) -> None:
    builder = PromptBuilder.for_model(FakeModel(), FakeInfo(architecture=architecture))
    assert builder.origin == "family"
    assert builder.stop == ["<end_of_turn>"]
    assert builder.generate("Hi") == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_unknown_family_falls_back_to_the_bare_prompt() -> None:
    builder = PromptBuilder.for_model(FakeModel(), FakeInfo(architecture="llama"))
    assert builder.origin == "default"
    assert builder.stop == []
    assert builder.generate("just this", system="ignored by {{ .Prompt }}") == "just this"


def test_broken_gguf_template_falls_back_to_the_family_default() -> None:
    info = FakeInfo(architecture="gemma3", chat_template="{% if %}")
    builder = PromptBuilder.for_model(FakeModel(), info)
    assert builder.origin == "family"


def test_broken_manifest_template_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unexpected EOF"):
        PromptBuilder.for_model(FakeModel(template="{{ if .System }}"), GEMMA3)


@pytest.mark.parametrize(("stop", "expected"), [("###", ["###"]), (["a", "b"], ["a", "b"])])
def test_stop_parameter_of_the_model_overrides_the_family_default(
    stop: str | list[str], expected: list[str]
) -> None:
    builder = PromptBuilder.for_model(FakeModel(parameters={"stop": stop}), GEMMA3)
    assert builder.stop == expected


# ---------------------------------------------------------------------------------------------
# Gemma family template


def test_gemma_template_puts_the_system_text_into_the_first_user_turn() -> None:
    builder = PromptBuilder.for_model(FakeModel(system="Be brief."), GEMMA3)
    prompt = builder.chat([user("a"), assistant("b"), user("c")])
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\na<end_of_turn>\n"
        "<start_of_turn>model\nb<end_of_turn>\n"
        "<start_of_turn>user\nc<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_template_leaves_a_final_assistant_message_open_for_continuation() -> None:
    builder = PromptBuilder.for_model(FakeModel(), GEMMA3)
    prompt = builder.chat([user("Count"), assistant("1, 2,")])
    assert prompt == "<start_of_turn>user\nCount<end_of_turn>\n<start_of_turn>model\n1, 2,"


def test_gemma_template_keeps_a_system_text_without_user_turns() -> None:
    builder = PromptBuilder.for_model(FakeModel(), GEMMA3)
    assert builder.chat([system("Only rules")]) == (
        "<start_of_turn>user\nOnly rules<end_of_turn>\n<start_of_turn>model\n"
    )


# ---------------------------------------------------------------------------------------------
# chat and generate semantics


def test_chat_prepends_model_system_and_messages() -> None:
    model = FakeModel(template=ROLES_TEMPLATE, system="S", messages=[user("seed"), assistant("ok")])
    assert PromptBuilder.for_model(model, GEMMA3).chat([user("q")]) == (
        "[system:S][user:seed][assistant:ok][user:q]"
    )


def test_chat_keeps_the_request_system_message_instead_of_the_model_system() -> None:
    model = FakeModel(template=ROLES_TEMPLATE, system="S")
    assert PromptBuilder.for_model(model, GEMMA3).chat([system("mine"), user("q")]) == (
        "[system:mine][user:q]"
    )


def test_chat_system_argument_replaces_the_model_system() -> None:
    model = FakeModel(template=ROLES_TEMPLATE, system="S")
    assert PromptBuilder.for_model(model, GEMMA3).chat([user("q")], system="T") == (
        "[system:T][user:q]"
    )


def test_chat_lower_cases_roles_and_merges_consecutive_messages() -> None:
    builder = PromptBuilder.for_model(FakeModel(template=ROLES_TEMPLATE), GEMMA3)
    prompt = builder.chat([{"role": "USER", "content": "a"}, {"role": "User", "content": "b"}])
    assert prompt == "[user:a\n\nb]"


def test_generate_request_system_replaces_the_model_system() -> None:
    model = FakeModel(template=ROLES_TEMPLATE, system="S", messages=[assistant("hello")])
    builder = PromptBuilder.for_model(model, GEMMA3)
    assert builder.generate("q") == "[system:S][assistant:hello][user:q]"
    assert builder.generate("q", system="R") == "[system:R][assistant:hello][user:q]"


def test_system_texts_are_joined_into_dot_system() -> None:
    template = "{{ .System }}|{{ range .Messages }}{{ .Role }};{{ end }}"
    builder = PromptBuilder.for_model(FakeModel(template=template), GEMMA3)
    assert builder.chat([system("a"), user("q"), system("b")]) == "a\n\nb|system;user;system;"


def test_known_fields_are_empty_not_no_value() -> None:
    template = (
        "{{ range .Messages }}{{ .Content }}{{ end }}|{{ .Prompt }}|{{ .Suffix }}|{{ .Response }}"
    )
    builder = PromptBuilder.for_model(FakeModel(template=template), GEMMA3)
    assert builder.generate("q") == "q|||"


def test_collate_keeps_tool_results_apart() -> None:
    messages = [normalize_message(m) for m in [user("a"), user("b")]]
    messages += [{"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]
    system_text, merged = collate(messages)
    assert system_text == ""
    assert [m["content"] for m in merged] == ["a\n\nb", "1", "2"]


LEGACY = (
    "{{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}"
    "{{ if .Prompt }}<|user|>{{ .Prompt }}<|end|>{{ end }}<|assistant|>{{ .Response }}<|end|>"
)


def test_legacy_template_is_rendered_turn_by_turn_and_cut_after_response() -> None:
    builder = PromptBuilder.for_model(FakeModel(template=LEGACY, system="S"), GEMMA3)
    assert builder.chat([user("a"), assistant("b"), user("c")]) == (
        "<|system|>S<|end|><|user|>a<|end|><|assistant|>b<|end|><|user|>c<|end|><|assistant|>"
    )


def test_legacy_template_continues_a_final_assistant_message() -> None:
    builder = PromptBuilder.for_model(FakeModel(template=LEGACY), GEMMA3)
    assert builder.chat([user("a"), assistant("The answer")]) == (
        "<|user|>a<|end|><|assistant|>The answer"
    )


def test_template_without_response_gets_it_appended() -> None:
    # Like Ollama's {{ .Prompt }} default: earlier answers are kept in the history.
    builder = PromptBuilder.for_model(FakeModel(template="Q: {{ .Prompt }} A: "), GEMMA3)
    assert builder.chat([user("1+1"), assistant("2"), user("2+2")]) == "Q: 1+1 A: 2Q: 2+2 A: "


FIM = (
    "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{- else }}{{ .Prompt }}{{ end }}"
)


def test_generate_with_suffix_fills_prompt_and_suffix() -> None:
    builder = PromptBuilder.for_model(FakeModel(template=FIM, system="not used"), GEMMA3)
    assert builder.generate("def add(", suffix="return c") == "<PRE> def add( <SUF>return c <MID>"
    assert builder.generate("def add(") == "def add("


def test_think_values_reach_the_template() -> None:
    template = "{{ range .Messages }}{{ end }}{{ .Think }}/{{ .ThinkLevel }}/{{ .IsThinkSet }}"
    builder = PromptBuilder.for_model(FakeModel(template=template), GEMMA3)
    assert builder.chat([user("q")]) == "false//false"
    assert builder.chat([user("q")], think=True) == "true/medium/true"
    assert builder.chat([user("q")], think="high") == "true/high/true"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "required": ["city"],
                "properties": {"city": {"type": "string", "description": "City name"}},
            },
        },
    }
]
TOOL_TEMPLATE = (
    "{{ if .Tools }}TOOLS {{ .Tools }}\n{{ end }}"
    "{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
    "{{ $name }} ({{ $p.Type }}): {{ $p.Description }}\n{{ end }}{{ end }}"
    "{{ range .Messages }}"
    "{{ if .ToolCalls }}{{ range .ToolCalls }}"
    "CALL {{ .Function.Name }} {{ .Function.Arguments }}\n{{ end }}"
    '{{ else if eq .Role "tool" }}RESULT {{ .ToolName }}: {{ .Content }}\n'
    "{{ else }}{{ .Role }}: {{ .Content }}\n{{ end }}{{ end }}"
)


def test_tools_and_tool_calls_render_as_ollama_shapes_them() -> None:
    builder = PromptBuilder.for_model(FakeModel(template=TOOL_TEMPLATE), GEMMA3)
    call = {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Oslo"}}}
    messages = [
        user("Weather?"),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "-3", "tool_name": "get_weather"},
    ]
    assert builder.chat(messages, tools=TOOLS) == (
        'TOOLS [{"type":"function","function":{"name":"get_weather",'
        '"description":"Current weather",'
        '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
        '"description":"City name"}}}}}]\n'
        "city (string): City name\n"
        "user: Weather?\n"
        'CALL get_weather {"city":"Oslo","unit":"c"}\n'
        "RESULT get_weather: -3\n"
    )
    assert builder.chat([user("hi")]) == "user: hi\n"


# ---------------------------------------------------------------------------------------------
# Jinja (GGUF chat templates)

ZEPHYR_LIKE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOKENS = {
    "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
}


def jinja_builder(source: str, **model: Any) -> PromptBuilder:
    info = FakeInfo(architecture="llama", chat_template=source, kv=TOKENS)
    return PromptBuilder.for_model(FakeModel(**model), info)


def test_jinja_template_renders_with_generation_prompt_and_without_leading_bos() -> None:
    builder = jinja_builder(ZEPHYR_LIKE, system="S")
    assert builder.origin == "gguf"
    assert builder.stop == []
    assert builder.chat([user("a"), assistant("b"), user("c")]) == (
        "<|system|>\nS</s>\n<|user|>\na</s>\n<|assistant|>\nb</s>\n<|user|>\nc</s>\n<|assistant|>\n"
    )


def test_jinja_bos_is_stripped_only_at_the_start() -> None:
    builder = jinja_builder("x{{ bos_token }}{{ messages[0]['content'] }}")
    assert builder.generate("hi") == "x<s>hi"


def test_jinja_trim_blocks_lstrip_blocks_and_loop_controls() -> None:
    source = (
        "{% for m in messages %}\n"
        "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
        "{{ m.content }};\n"
        "    {% if loop.index == 3 %}{% break %}{% endif %}\n"
        "{% endfor %}"
    )
    builder = jinja_builder(source)
    assert builder.chat([system("s"), user("a"), assistant("b"), user("c"), assistant("d")]) == (
        "a;\nb;\n"
    )


def test_jinja_raise_exception_becomes_a_template_error() -> None:
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok"
    builder = jinja_builder(source)
    assert builder.chat([user("a")]) == "ok"
    with pytest.raises(TemplateError, match="user first"):
        builder.chat([assistant("a")])


def test_jinja_tojson_keeps_unicode_and_key_order_and_sees_tools() -> None:
    builder = jinja_builder("{{ tools | tojson }}|{{ messages[0].content | tojson }}")
    tools = [{"name": "é", "a": 1}]
    assert builder.chat([user("ü")], tools=tools) == '[{"name": "é", "a": 1}]|"ü"'


def test_jinja_tool_calls_get_the_hugging_face_shape() -> None:
    source = "{% for c in messages[1].tool_calls %}{{ c.type }}:{{ c.function.name }}{% endfor %}"
    call = {"function": {"name": "f", "arguments": {}}}
    messages = [user("a"), {"role": "assistant", "content": "", "tool_calls": [call]}]
    assert jinja_builder(source).chat(messages) == "function:f"


def test_jinja_strftime_now() -> None:
    assert jinja_builder("{{ strftime_now('%Y') }}").generate("x").isdigit()


def test_jinja_sandbox_refuses_to_mutate_messages() -> None:
    with pytest.raises(TemplateError, match="chat template"):
        jinja_builder("{{ messages.append(1) }}").chat([user("a")])


def test_jinja_generation_block_renders_its_body() -> None:
    source = (
        "{% for m in messages %}{% generation %}<{{ m.content }}>{% endgeneration %}{% endfor %}"
    )
    assert jinja_builder(source).chat([user("a")]) == "<a>"


def test_jinja_template_has_no_fill_in_the_middle() -> None:
    with pytest.raises(TemplateError, match="suffix"):
        jinja_builder(ZEPHYR_LIKE).generate("a", suffix="b")


def test_jinja_path_with_a_real_gguf_header(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "chat.gguf", chat_template=ZEPHYR_LIKE)
    info = GGUFInfo.read(path)
    builder = PromptBuilder.for_model(FakeModel(), info)
    assert builder.origin == "gguf"
    assert builder.generate("hi") == "<|user|>\nhi</s>\n<|assistant|>\n"
