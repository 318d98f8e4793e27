"""Prompt rendering for a model: which template it uses, and how a request fills that template.

The template is, in order: the manifest's TEMPLATE layer (a Go template), else the GGUF's
``tokenizer.chat_template`` (Jinja, rendered in a sandbox as Hugging Face does), else a default for
the model's family by architecture (Gemma turns), else ``{{ .Prompt }}``.

Go templates are filled the way Ollama fills them (its template/template.go and server/routes.go):

- consecutive messages of one role are merged with a blank line (tool results excepted), and every
  system text is also joined into ``.System``;
- a template that mentions ``.Messages`` gets the whole conversation at once;
- an older template that only knows ``.System``/``.Prompt``/``.Response`` is rendered once per turn,
  and the last turn is cut right after ``{{ .Response }}`` so the model continues from there;
- a generate request with a suffix fills ``.Prompt`` and ``.Suffix`` (fill-in-the-middle).

Every field Ollama defines is always present, so a template never prints ``<no value>`` for one.

Templates come from users (a request's or a Modelfile's TEMPLATE, a downloaded GGUF), so every
render runs under `RenderLimits` (time and output size, see gotemplate_exec.py and
jinja_sandbox.py) and, from the server, on the template threads (`render_off_loop`), never on
the event loop, which is Jupyter's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser as JinjaParser

from .gotemplate import GoTemplate, RenderLimits, TemplateError, TemplateLimitExceeded
from .gotemplate_lex import DEFAULT_LIMITS
from .gotemplate_values import template_messages, template_tools
from .jinja_sandbox import GuardedList, LimitedSandbox, render_limited

log = logging.getLogger(__name__)

Think = bool | str | None
Origin = Literal["modelfile", "gguf", "family", "default"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"

# Gemma's chat format: user and model turns; Gemma has no system role, so the system text opens the
# first user turn. A final assistant message is left open so the model continues it.
GEMMA_TEMPLATE = """\
{{- $system := .System }}
{{- $lastRole := "" }}
{{- range $i, $_ := .Messages }}
{{- $lastRole = .Role }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- else if ne .Role "system" }}<start_of_turn>user
{{ if $system }}{{ $system }}

{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}
{{- if $system }}<start_of_turn>user
{{ $system }}<end_of_turn>
{{ end }}
{{- if ne $lastRole "assistant" }}<start_of_turn>model
{{ end }}"""

_GEMMA_DEFAULT = (GEMMA_TEMPLATE, ("<end_of_turn>",))
FAMILY_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gemma": _GEMMA_DEFAULT,
    "gemma2": _GEMMA_DEFAULT,
    "gemma3": _GEMMA_DEFAULT,
    "gemma3n": _GEMMA_DEFAULT,
}


class ModelLike(Protocol):
    """What prompt rendering needs of a store `Model`."""

    @property
    def template(self) -> str | None: ...
    @property
    def system(self) -> str | None: ...
    @property
    def messages(self) -> list[dict[str, Any]]: ...
    @property
    def parameters(self) -> dict[str, Any]: ...


class GGUFLike(Protocol):
    """What prompt rendering needs of a `GGUFInfo`."""

    @property
    def architecture(self) -> str: ...
    @property
    def chat_template(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a request asks a template to render."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    think: Think = None
    prompt: str = ""  # fill-in-the-middle only, with `suffix`
    suffix: str = ""


class PromptTemplate(Protocol):
    def render(self, conversation: Conversation, limits: RenderLimits = DEFAULT_LIMITS) -> str: ...


T = TypeVar("T")

# Renders of hostile templates hold a thread until their deadline: their own few threads keep
# them from starving the loop's default executor (store writes, blob hashing).
_RENDER_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hana-template")


async def render_off_loop(work: Callable[[], T]) -> T:
    """Run `work` (building a prompt) on the template threads; the event loop stays free."""
    return await asyncio.get_running_loop().run_in_executor(_RENDER_THREADS, work)


def normalize_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the role lower-cased (as Ollama reads it) and the content always a string."""
    normalized = dict(message)
    normalized["role"] = str(message.get("role") or "").lower()
    normalized["content"] = str(message.get("content") or "")
    return normalized


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's collate: all system texts joined, consecutive same-role messages merged.

    Tool results stay separate because each carries its own tool name.
    """
    system: list[str] = []
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "system":
            system.append(message["content"])
        if merged and merged[-1]["role"] == message["role"] and message["role"] != "tool":
            merged[-1] = {
                **merged[-1],
                "content": merged[-1]["content"] + "\n\n" + message["content"],
            }
        else:
            merged.append(dict(message))
    return "\n\n".join(system), merged


def _think_values(think: Think) -> dict[str, Any]:
    """``.Think``/``.ThinkLevel``/``.IsThinkSet`` as Ollama derives them from the request."""
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, str):
        return {"Think": bool(think), "ThinkLevel": think, "IsThinkSet": True}
    return {"Think": think, "ThinkLevel": "medium" if think else "", "IsThinkSet": True}


def _values(think: Think, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "System": "",
        "Prompt": "",
        "Response": "",
        "Suffix": "",
        "Messages": [],
        "Tools": None,
    }
    values |= _think_values(think)
    values |= fields
    return values


class GoPromptTemplate:
    """A Go template filled the way Ollama fills it."""

    def __init__(self, source: str) -> None:
        template = GoTemplate(source)
        names = template.identifiers()
        if "messages" not in names and "response" not in names:
            # Like Ollama: without {{ .Response }}, earlier turns would lose the model's answers.
            template = GoTemplate(source + "{{ .Response }}")
        self.source = source
        self.uses_messages = "messages" in names
        self._template = template
        self._last_turn = template.truncated_after_field("Response")

    def render(self, conversation: Conversation, limits: RenderLimits = DEFAULT_LIMITS) -> str:
        think = conversation.think
        if conversation.prompt and conversation.suffix:
            return self._template.render(
                _values(think, Prompt=conversation.prompt, Suffix=conversation.suffix), limits
            )
        system, messages = collate(conversation.messages)
        if self.uses_messages:
            return self._template.render(
                _values(
                    think,
                    System=system,
                    Messages=template_messages(messages),
                    Tools=template_tools(conversation.tools),
                ),
                limits,
            )
        return self._render_turns(messages, think, limits)

    def _render_turns(
        self, messages: list[dict[str, Any]], think: Think, limits: RenderLimits
    ) -> str:
        """One render per turn, all of them under one deadline and one size limit."""
        deadline = limits.deadline()
        parts: list[str] = []

        def render(template: GoTemplate, turn: dict[str, str]) -> None:
            left = RenderLimits(deadline - time.monotonic(), limits.max_chars)
            if left.seconds <= 0:
                raise limits.too_long()
            parts.append(template.render(_values(think, **turn), left))
            if sum(map(len, parts)) > limits.max_chars:
                raise limits.too_big()

        turn = {"System": "", "Prompt": "", "Response": ""}
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    render(self._template, turn)
                    turn = {"System": "", "Prompt": "", "Response": ""}
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    render(self._template, turn)
                    turn = {"System": "", "Prompt": "", "Response": ""}
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        render(self._last_turn, turn)
        return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Jinja (GGUF chat templates)


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}`` from Hugging Face templates: renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2's Extension API declares it as a class set

    def parse(self, parser: JinjaParser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Hugging Face's tojson: unlike jinja2's own, it neither sorts keys nor escapes for HTML.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=1)
def _jinja_environment() -> LimitedSandbox:
    env = LimitedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _GenerationBlock]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


def _jinja_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message in the Hugging Face shape: each tool call as ``{"type": "function", ...}``."""
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [{"type": "function", **call} for call in calls]
    for key in ("tool_name", "tool_call_id", "thinking", "images"):
        if message.get(key):
            out[key] = message[key]
    return out


class JinjaPromptTemplate:
    """A GGUF ``tokenizer.chat_template``, rendered in jinja2's immutable sandbox with limits."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        try:
            self._template = _jinja_environment().from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template: {exc}") from exc
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, conversation: Conversation, limits: RenderLimits = DEFAULT_LIMITS) -> str:
        if conversation.suffix:
            raise TemplateError("the model's chat template has no fill-in-the-middle (suffix) form")
        _, messages = collate(conversation.messages)
        variables: dict[str, Any] = {
            "messages": GuardedList(_jinja_message(message) for message in messages),
            "tools": GuardedList(conversation.tools) if conversation.tools else None,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": True,
        }
        if conversation.think is not None:
            variables["enable_thinking"] = bool(conversation.think)  # Qwen3-style templates
        try:
            text = render_limited(self._template, variables, limits)
        except TemplateLimitExceeded:
            raise
        except Exception as exc:  # raise_exception, undefined names, type errors in the template
            raise TemplateError(f"chat template: {exc}") from exc
        # The runner tokenizes the prompt adding BOS itself when the vocabulary asks for it, so a
        # BOS written by the template would be doubled, which degrades the model's answers.
        if self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text


# ---------------------------------------------------------------------------------------------
# Choosing the template


@lru_cache(maxsize=64)
def _go_template(source: str) -> GoPromptTemplate:
    return GoPromptTemplate(source)


@lru_cache(maxsize=16)
def _jinja_template(source: str, bos_token: str, eos_token: str) -> JinjaPromptTemplate:
    return JinjaPromptTemplate(source, bos_token=bos_token, eos_token=eos_token)


def special_token(info: object, which: str) -> str:
    """The text of the GGUF's ``bos`` or ``eos`` token, or "" when the header does not give it.

    Uses ``info.<which>_token`` when the reader provides it, else looks the id up in the vocabulary
    if `kv` still holds it (small vocabularies; big arrays are dropped when the header is read).
    """
    text = getattr(info, f"{which}_token", None)
    if isinstance(text, str):
        return text
    kv = getattr(info, "kv", None) or {}
    token_id = kv.get(f"tokenizer.ggml.{which}_token_id")
    tokens = kv.get("tokenizer.ggml.tokens")
    if isinstance(token_id, int) and isinstance(tokens, list) and 0 <= token_id < len(tokens):
        return str(tokens[token_id])
    return ""


def _gguf_template(info: GGUFLike | None) -> JinjaPromptTemplate | None:
    source = info.chat_template if info is not None else None
    if not source:
        return None
    try:
        return _jinja_template(source, special_token(info, "bos"), special_token(info, "eos"))
    except TemplateError as exc:
        # A GGUF from elsewhere may use Jinja we cannot compile; the family default still works.
        log.warning("ignoring the GGUF chat template: %s", exc)
        return None


def _choose_template(
    model: ModelLike, info: GGUFLike | None
) -> tuple[PromptTemplate, Origin, tuple[str, ...]]:
    if model.template:
        return _go_template(model.template), "modelfile", ()
    jinja_template = _gguf_template(info)
    if jinja_template is not None:
        return jinja_template, "gguf", ()
    architecture = info.architecture if info is not None else ""
    if architecture in FAMILY_DEFAULTS:
        source, stop = FAMILY_DEFAULTS[architecture]
        return _go_template(source), "family", stop
    return _go_template(DEFAULT_TEMPLATE), "default", ()


def _stop_parameter(parameters: Mapping[str, Any]) -> list[str]:
    stop = parameters.get("stop")
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list | tuple):
        return [str(item) for item in stop]
    return []


@dataclass(frozen=True)
class PromptBuilder:
    """Turns chat and generate requests into prompt text for one model.

        builder = PromptBuilder.for_model(model, info)
        prompt = builder.chat([{"role": "user", "content": "Hi"}])
        options.setdefault("stop", builder.stop)

    ``raw`` generate requests skip the template entirely; that is the caller's choice.
    """

    template: PromptTemplate
    origin: Origin
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    default_stop: tuple[str, ...] = ()

    @classmethod
    def for_model(cls, model: ModelLike, info: GGUFLike | None) -> PromptBuilder:
        """Pick the template: manifest TEMPLATE > GGUF chat template > family default > prompt."""
        template, origin, family_stop = _choose_template(model, info)
        stop = _stop_parameter(model.parameters or {}) or list(family_stop)
        return cls(
            template=template,
            origin=origin,
            system=model.system,
            messages=[normalize_message(m) for m in model.messages or []],
            default_stop=tuple(stop),
        )

    @property
    def stop(self) -> list[str]:
        """The model's ``stop`` parameter if it has one, else the family template's stop strings."""
        return list(self.default_stop)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        think: Think = None,
    ) -> str:
        """Render a chat: the model's MESSAGEs, then `messages`.

        The system text (`system`, else the model's SYSTEM) goes first unless the request's first
        message is a system message, as in Ollama.
        """
        request = [normalize_message(message) for message in messages]
        conversation = [*self.messages, *request]
        system_text = self.system if system is None else system
        if system_text and (not request or request[0]["role"] != "system"):
            conversation.insert(0, {"role": "system", "content": system_text})
        return self.template.render(Conversation(conversation, tools=tools, think=think))

    def generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        suffix: str | None = None,
        think: Think = None,
    ) -> str:
        """Render a one-turn chat: system (`system`, else the model's SYSTEM), MESSAGEs, prompt.

        With a suffix, the template gets ``.Prompt`` and ``.Suffix`` instead (fill-in-the-middle).
        """
        if suffix:
            return self.template.render(Conversation([], think=think, prompt=prompt, suffix=suffix))
        conversation: list[dict[str, Any]] = []
        system_text = system or self.system
        if system_text:
            conversation.append({"role": "system", "content": system_text})
        conversation += self.messages
        conversation.append({"role": "user", "content": prompt})
        return self.template.render(Conversation(conversation, think=think))


__all__ = [
    "DEFAULT_TEMPLATE",
    "FAMILY_DEFAULTS",
    "GEMMA_TEMPLATE",
    "Conversation",
    "GoPromptTemplate",
    "JinjaPromptTemplate",
    "PromptBuilder",
    "RenderLimits",
    "TemplateError",
    "TemplateLimitExceeded",
    "collate",
    "normalize_message",
    "render_off_loop",
]
