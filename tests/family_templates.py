"""Prompt templates written like those of real model families, for tool and thinking tests.

Written here from the formats the families use (see the capabilities reference); Command R's
template is read from the shared conformance set instead, when that is present.
"""

from __future__ import annotations

from pathlib import Path

CONFORMANCE = Path("/work/shared/conformance/ollama-templates")

# Llama 3.1: tools listed in the last user turn, calls written as bare JSON
# ({"name": ..., "parameters": ...}), tool results in an "ipython" turn.
LLAMA31 = """\
{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You can call functions. Answer a call's result in plain words.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

To call a function, reply with JSON {"name": function name, "parameters": arguments}.

{{ range $.Tools }}{{ . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", \
"parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

# Qwen 3: ChatML turns, tools as JSON lines inside <tools>, calls in <tool_call> tags, thinking
# in <think> tags (an empty pair in the prompt when thinking is turned off).
QWEN3 = """\
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

Function signatures, inside <tools></tools>:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

To call one, write <tool_call>{"name": <name>, "arguments": <object>}</tool_call>.
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if (and $.IsThinkSet (and .Thinking (or $last $.Think))) -}}
<think>{{ .Thinking }}</think>
{{ end -}}
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) -}}
<think>

</think>

{{ end -}}
{{ end }}
{{- end }}"""

# DeepSeek R1 style: the prompt itself opens <think>, so the output starts inside the thinking.
R1 = """\
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|User|>{{ .Content }}
{{- else if eq .Role "assistant" }}<|Assistant|>
{{- if and $.IsThinkSet (and $last .Thinking) -}}
<think>
{{ .Thinking }}
</think>
{{- end }}{{ .Content }}{{ if not $last }}<|end|>{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|Assistant|>
{{- if $.Think }}<think>
{{ else }}<think>

</think>

{{ end }}
{{- end }}
{{- end }}"""

# Mistral: tools before the last [INST], calls after [TOOL_CALLS] as a JSON list.
MISTRAL = """\
{{- range $index, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $index)) 1 }}
{{- if eq .Role "user" }}
{{- if and $last $.Tools }}[AVAILABLE_TOOLS] {{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $last $.System }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}</s>
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range $i, $c := .ToolCalls }}{{ if $i }}, {{ end }}{"name": "{{ $c.Function.Name }}", \
"arguments": {{ $c.Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ json .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""


def command_r() -> str | None:
    """Command R's template from the conformance set, or None where that set is absent."""
    path = CONFORMANCE / "command-r.gotmpl"
    return path.read_text() if path.is_file() else None
