"""The Go text/template interpreter: syntax, Go semantics, builtins, Ollama's functions, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from hana_server.store.gotemplate import GoTemplate, TemplateError
from hana_server.store.gotemplate_values import Tool, ToolCall

from hana_protocol.errors import HanaError


def render(source: str, data: Any = None, **kwargs: Any) -> str:
    return GoTemplate(source, **kwargs).render(data if data is not None else {})


@dataclass
class Person:
    Name: str
    Tags: list[str] = field(default_factory=list)
    secret: str = "hidden"

    def Greet(self, greeting: str) -> str:
        return f"{greeting}, {self.Name}"


# ---------------------------------------------------------------------------------------------
# text, trim markers, comments


def test_text_without_actions_is_copied() -> None:
    assert render("plain {text} } {") == "plain {text} } {"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a \n {{- .X }} b", "a1 b"),
        ("a {{ .X -}} \n\t b", "a 1b"),
        ("a \n {{- .X -}} \n b", "a1b"),
        ("a {{-3}} b", "a -3 b"),  # without a space the dash is a minus sign, not a trim marker
    ],
)
def test_trim_markers_remove_whitespace_next_to_the_action(source: str, expected: str) -> None:
    assert render(source, {"X": 1}) == expected


def test_comments_render_nothing_and_honour_trim_markers() -> None:
    assert render("a {{/* one\ntwo */}} b") == "a  b"
    assert render("a \n{{- /* gone */ -}}\n b") == "ab"


def test_unterminated_comment_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unclosed comment"):
        GoTemplate("{{/* never closed }}")


# ---------------------------------------------------------------------------------------------
# data access


def test_fields_of_maps_and_objects_chain() -> None:
    data = {"User": Person("Ada", ["x"]), "Meta": {"Lang": {"Code": "en"}}}
    assert render("{{ .User.Name }} {{ .Meta.Lang.Code }} {{ .User.Tags }}", data) == "Ada en [x]"


def test_missing_map_key_is_no_value_and_falsey() -> None:
    assert render("{{ .Nope }}|{{ .Nope.Deeper }}|{{ if .Nope }}yes{{ else }}no{{ end }}") == (
        "<no value>|<no value>|no"
    )


def test_unknown_struct_field_is_an_execution_error_with_position() -> None:
    with pytest.raises(TemplateError, match=r"2:4: can't evaluate field Age in type Person"):
        render("ok\n{{ .Age }}", Person("Ada"))


def test_lowercase_attributes_are_not_reachable() -> None:
    # Go only exports capitalised fields; here it also keeps Python internals out of reach.
    with pytest.raises(TemplateError, match="can't evaluate field secret"):
        render("{{ .secret }}", Person("Ada"))


def test_methods_are_called_with_arguments_and_piped_values() -> None:
    data = {"P": Person("Ada")}
    assert render('{{ .P.Greet "Hi" }} / {{ "Yo" | .P.Greet }}', data) == "Hi, Ada / Yo, Ada"


def test_dollar_is_the_root_inside_range_and_with() -> None:
    data = {"Items": [1, 2], "Sep": ";", "Inner": {"V": "in"}}
    source = (
        "{{ range .Items }}{{ . }}{{ $.Sep }}{{ end }}{{ with .Inner }}{{ .V }}{{ $.Sep }}{{ end }}"
    )
    assert render(source, data) == "1;2;in;"


def test_parenthesised_pipelines_and_chains() -> None:
    data = {"M": {"a": {"B": "deep"}}, "L": [1, 2, 3]}
    assert render('{{ (index .M "a").B }} {{ len (slice .L 1) }}', data) == "deep 2"


def test_pipelines_pass_the_value_as_last_argument() -> None:
    assert render('{{ .X | printf "%s-%s" "a" }}', {"X": "b"}) == "a-b"


# ---------------------------------------------------------------------------------------------
# variables


def test_assignment_inside_range_updates_the_outer_variable() -> None:
    source = '{{ $s := "" }}{{ range .L }}{{ $s = printf "%s%v" $s . }}{{ end }}{{ $s }}'
    assert render(source, {"L": [1, 2, 3]}) == "123"


def test_declaration_inside_a_block_goes_out_of_scope_at_end() -> None:
    with pytest.raises(TemplateError, match='undefined variable "\\$y"'):
        GoTemplate("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_declaration_in_range_body_is_fresh_each_iteration() -> None:
    source = (
        "{{ range .L }}{{ $last := eq . 3 }}{{ if $last }}end{{ else }}{{ . }},{{ end }}{{ end }}"
    )
    assert render(source, {"L": [1, 2, 3]}) == "1,2,end"


def test_assigning_an_undeclared_variable_is_a_parse_error() -> None:
    with pytest.raises(TemplateError, match="undefined variable"):
        GoTemplate("{{ $x = 1 }}")


def test_declaration_in_if_pipeline_is_visible_in_both_branches() -> None:
    source = "{{ if $v := .V }}{{ $v }}{{ else }}[{{ $v }}]{{ end }}"
    assert render(source, {"V": "x"}) == "x"
    assert render(source, {"V": ""}) == "[]"


# ---------------------------------------------------------------------------------------------
# control structures


def test_range_with_index_and_element() -> None:
    assert render("{{ range $i, $v := .L }}{{ $i }}={{ $v }} {{ end }}", {"L": ["a", "b"]}) == (
        "0=a 1=b "
    )


def test_range_over_a_map_goes_in_sorted_key_order() -> None:
    data = {"M": {"b": 2, "c": 3, "a": 1}}
    assert render("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", data) == "a1b2c3"
    assert render("{{ range .M }}{{ . }}{{ end }}", data) == "123"


@pytest.mark.parametrize("empty", [[], {}, None, 0])
def test_range_else_runs_for_empty_collections(empty: Any) -> None:
    assert render("{{ range .L }}item{{ else }}none{{ end }}", {"L": empty}) == "none"


def test_range_over_an_integer_counts_from_zero() -> None:
    assert render("{{ range $i := 3 }}{{ $i }}{{ end }}") == "012"


def test_break_and_continue() -> None:
    source = (
        "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}"
        "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}"
    )
    assert render(source, {"L": [1, 2, 3, 4, 5]}) == "13"


def test_break_outside_range_is_a_parse_error() -> None:
    with pytest.raises(TemplateError, match=r"\{\{break\}\} outside \{\{range\}\}"):
        GoTemplate("{{ if true }}{{ break }}{{ end }}")


def test_range_over_a_string_is_an_error() -> None:
    with pytest.raises(TemplateError, match="range can't iterate over abc"):
        render("{{ range .S }}{{ end }}", {"S": "abc"})


@pytest.mark.parametrize(("role", "expected"), [("a", "A"), ("b", "B"), ("c", "other")])
def test_else_if_chains(role: str, expected: str) -> None:
    source = '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}other{{ end }}'
    assert render(source, {"R": role}) == expected


def test_with_sets_dot_and_else_with_chains() -> None:
    source = "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}"
    assert render(source, {"A": "1", "B": "2"}) == "a=1"
    assert render(source, {"A": "", "B": "2"}) == "b=2"
    assert render(source, {"A": "", "B": ""}) == "none"


def test_define_template_and_block() -> None:
    source = (
        '{{ define "item" }}<{{ . }}>{{ end }}{{ template "item" .X }}'
        '{{ block "b" 2 }}[{{ . }}]{{ end }}'
    )
    assert render(source, {"X": 1}) == "<1>[2]"


def test_unknown_template_is_an_execution_error() -> None:
    with pytest.raises(TemplateError, match='no such template "nope"'):
        render('{{ template "nope" }}')


# ---------------------------------------------------------------------------------------------
# builtins


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ and 1 0 2 }}", "0"),  # and: the first false argument
        ("{{ and 1 2 3 }}", "3"),  # ... or the last one
        ('{{ or 0 "" "x" 0 }}', "x"),  # or: the first true argument
        ('{{ or 0 "" }}', ""),  # ... or the last one
        ("{{ not 0 }} {{ not .L }} {{ not .M }}", "true false true"),
    ],
)
def test_and_or_not_follow_go_truthiness(source: str, expected: str) -> None:
    assert render(source, {"L": [1], "M": {}}) == expected


def test_and_or_short_circuit() -> None:
    # The out-of-range index would fail if it were evaluated.
    assert render("{{ and false (index .L 9) }}|{{ or true (index .L 9) }}", {"L": []}) == (
        "false|true"
    )


def test_eq_with_several_arguments_and_comparisons() -> None:
    source = '{{ eq .R "x" "user" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} '
    source += '{{ gt "b" "a" }} {{ ge 1 2 }}'
    assert render(source, {"R": "user"}) == "true true true true true false"


def test_eq_with_a_missing_value_is_false_not_an_error() -> None:
    assert render('{{ eq .Missing "x" }}') == "false"


def test_comparing_incompatible_types_is_an_error() -> None:
    with pytest.raises(TemplateError, match="incompatible types for comparison"):
        render('{{ eq 1 "1" }}')
    with pytest.raises(TemplateError, match="invalid type for comparison"):
        render("{{ lt true false }}")


def test_len_index_and_slice() -> None:
    data = {"S": "héllo", "L": [10, 20, 30], "M": {"k": "v"}}
    source = (
        '{{ len .S }} {{ len .L }} {{ index .L 1 }} {{ index .M "k" }} '
        "{{ slice .L 1 }} {{ slice .S 0 3 }}"
    )
    assert render(source, data) == "6 3 20 v [20 30] hé"  # len and slice count bytes, as in Go


def test_index_out_of_range_is_an_error() -> None:
    with pytest.raises(TemplateError, match="error calling index: index out of range: 5"):
        render("{{ index .L 5 }}", {"L": [1]})


def test_wrong_number_of_arguments_is_an_error() -> None:
    with pytest.raises(TemplateError, match="wrong number of args for len: want 1 got 2"):
        render("{{ len 1 2 }}")


def test_print_and_println_space_like_go() -> None:
    assert render('{{ print 1 2 "a" "b" 3 }}|{{ println "a" 1 }}') == "1 2ab3|a 1\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ printf "%s|%d|%v|%q|%t|%%" "a" 42 .L "q\\"" true }}', 'a|42|[1 2]|"q\\""|true|%'),
        (
            '{{ printf "%5.2f|%-4s|%04d|%x|%X|%+d" 3.14159 "ab" 7 255 "hi" 5 }}',
            " 3.14|ab  |0007|ff|6869|+5",
        ),
        ('{{ printf "%v %v %v %v" 1e6 0.0001 1e-05 2.5 }}', "1e+06 0.0001 1e-05 2.5"),
        ('{{ printf "%d %s" 1 }}', "1 %!s(MISSING)"),
        ('{{ printf "%d" 1 "x" }}', "1%!(EXTRA string=x)"),
        ('{{ printf "%d" "x" }}', "%!d(string=x)"),
        ('{{ printf "%v" .M }}', "map[a:1 b:2]"),
    ],
)
def test_printf_verbs(source: str, expected: str) -> None:
    assert render(source, {"L": [1, 2], "M": {"b": 2, "a": 1}}) == expected


def test_values_print_like_go() -> None:
    data = {"F": 1000000.0, "G": 3.0, "B": False, "N": None, "L": ["a", None], "M": {"k": [1]}}
    assert render("{{ .F }} {{ .G }} {{ .B }} {{ .N }} {{ .L }} {{ .M }}", data) == (
        "1e+06 3 false <no value> [a <nil>] map[k:[1]]"
    )


def test_escaping_functions() -> None:
    source = "{{ html .H }}|{{ js .J }}|{{ urlquery .U }}"
    data = {"H": "<a href='x'>&\"", "J": "it's <b>\n", "U": "a b&c=d/é"}
    assert render(source, data) == (
        "&lt;a href=&#39;x&#39;&gt;&amp;&#34;|it\\'s \\u003Cb\\u003E\\u000A|a+b%26c%3Dd%2F%C3%A9"
    )


def test_call_invokes_a_function_value() -> None:
    assert render("{{ call .F 2 3 }}", {"F": lambda a, b: a * b}) == "6"


def test_extra_functions_can_be_added() -> None:
    assert render('{{ shout "hi" }}', funcs={"shout": lambda s: s.upper() + "!"}) == "HI!"


def test_unknown_function_is_a_parse_error() -> None:
    with pytest.raises(TemplateError, match='function "shout" not defined'):
        GoTemplate('{{ shout "hi" }}')


# ---------------------------------------------------------------------------------------------
# Ollama's functions


def test_json_marshals_like_go() -> None:
    data = {"V": {"b": [1, 2.0, 0.5, "<&>", "é"], "a": None, "c": True}}
    assert (
        render("{{ json .V }}", data)
        == '{"a":null,"b":[1,2,0.5,"\\u003c\\u0026\\u003e","é"],"c":true}'
    )


def test_json_of_tools_keeps_struct_field_order_and_tags() -> None:
    tool = Tool.from_json(
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {
                    "type": "object",
                    "required": ["city"],
                    "properties": {
                        "unit": {"type": "string", "enum": ["c", "f"]},
                        "city": {"type": "string"},
                    },
                },
            },
        }
    )
    assert render("{{ json . }}", tool) == (
        '{"type":"function","function":{"name":"get_weather","description":"Weather now",'
        '"parameters":{"type":"object","required":["city"],"properties":'
        '{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}}}}}'
    )


def test_tool_call_arguments_print_as_sorted_json() -> None:
    call = ToolCall.from_json({"function": {"name": "f", "arguments": {"z": 1, "a": "x"}}})
    assert render("{{ .Function.Name }}({{ .Function.Arguments }})", call) == 'f({"a":"x","z":1})'


def test_current_date_is_today_in_iso_form() -> None:
    assert render("{{ currentDate }}") == date.today().isoformat()


def test_to_typescript_type() -> None:
    tool = Tool.from_json(
        {
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "n": {"type": ["integer", "null"]},
                        "o": {"anyOf": [{"type": "string"}, {"type": "array"}]},
                    },
                },
            }
        }
    )
    source = (
        "{{ range $k, $p := .Function.Parameters.Properties }}"
        "{{ $k }}: {{ toTypeScriptType $p }}; {{ end }}"
    )
    assert render(source, tool) == "n: number | null; o: string | any[]; "
    assert render("{{ toTypeScriptType 1 }}") == "any"


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ .X ", "1:7: unclosed action"),
        ("line\n  {{ end }}", "2:6: unexpected {{end}}"),
        ("{{ if .X }}open", "unexpected EOF"),
        ("{{ 12ab }}", 'bad number syntax: "12ab"'),
        ("{{ .X | 1 }}", "non executable command in pipeline stage 2"),
        ('{{ "unterminated }}', "unterminated quoted string"),
        ("{{ (.X }}", "unclosed left paren"),
        ("{{ range $a, $b, $c := .L }}{{ end }}", "too many declarations in range"),
    ],
)
def test_syntax_errors_name_the_position(source: str, message: str) -> None:
    with pytest.raises(
        TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")
    ) as info:
        GoTemplate(source)
    assert info.value.line is not None


def test_template_errors_are_hana_errors_with_status_500() -> None:
    with pytest.raises(HanaError) as info:
        GoTemplate("{{ end }}")
    assert info.value.status == 500
    assert info.value.message.startswith("template: 1:4:")


# ---------------------------------------------------------------------------------------------
# Ollama's tree helpers


def test_identifiers_are_lower_cased_fields_and_variables() -> None:
    template = GoTemplate(
        "{{ range $i, $m := .Messages }}{{ $.System }}{{ .Role }}{{ end }}{{ json .Tools }}"
    )
    assert template.identifiers() == {"messages", "$", "system", "role", "tools"}


def test_truncated_after_field_drops_everything_after_the_field() -> None:
    template = GoTemplate(
        "<s>{{ .Prompt }}</s>{{ if .Response }}A: {{ .Response }} end{{ end }}</t>"
    )
    cut = template.truncated_after_field("Response")
    assert cut.render({"Prompt": "p", "Response": "r"}) == "<s>p</s>A: r"
    assert template.render({"Prompt": "p", "Response": "r"}) == "<s>p</s>A: r end</t>"


def test_parsed_templates_render_repeatedly_with_fresh_state() -> None:
    template = GoTemplate(
        '{{ $n := "" }}{{ range .L }}{{ $n = printf "%s%v" $n . }}{{ end }}{{ $n }}'
    )
    assert template.render({"L": [1]}) == "1"
    assert template.render({"L": [2, 3]}) == "23"
