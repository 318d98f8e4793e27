"""Ollama's template data: chat messages and tools shaped the way Ollama hands them to Go templates.

Templates address fields by their Go names (``.Role``, ``.ToolCalls``, ``.Function.Arguments``,
``$property.Type``) and print some values through Go methods: tool-call arguments and the tool list
print as JSON, a property's type prints as ``string`` or ``[string null]``. These frozen dataclasses
carry the same field names, JSON tags and printing behaviour (see :mod:`.gotemplate_fmt`), built
from the API's JSON shapes (``{"role": ..., "tool_calls": [{"function": {...}}]}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .gotemplate_fmt import RawJSON, format_value, marshal_json

_TYPESCRIPT_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def _tag(name: str) -> dict[str, str]:
    return {"json": name}


class JSONMap(dict[str, Any]):
    """A Go map that prints as its JSON (Ollama's ``templateArgs`` and ``templateProperties``)."""

    def go_string(self) -> str:
        return marshal_json(dict(self))


class JSONList(list[Any]):
    """A Go slice that prints as its JSON (Ollama's ``templateTools``)."""

    def go_string(self) -> str:
        return marshal_json(list(self))


class OrderedProperties(dict[str, "ToolProperty"]):
    """Nested tool properties: JSON keeps the caller's key order (Ollama's ordered map)."""

    def go_json(self) -> RawJSON:
        members = (f"{marshal_json(key)}:{marshal_json(value)}" for key, value in self.items())
        return RawJSON("{" + ",".join(members) + "}")


class PropertyType(tuple[str, ...]):
    """A JSON-schema ``type``: one name or several (Go ``PropertyType []string``)."""

    def go_string(self) -> str:
        if len(self) == 1:
            return self[0]
        return format_value(list(self)) if self else ""

    def go_json(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


@dataclass(frozen=True, slots=True)
class ToolProperty:
    """One parameter of a tool (Go ``api.ToolProperty``)."""

    AnyOf: list[ToolProperty] = field(default_factory=list, metadata=_tag("anyOf,omitempty"))
    Type: PropertyType = field(default=PropertyType(), metadata=_tag("type,omitempty"))
    Items: Any = field(default=None, metadata=_tag("items,omitempty"))
    Description: str = field(default="", metadata=_tag("description,omitempty"))
    Enum: list[Any] = field(default_factory=list, metadata=_tag("enum,omitempty"))
    Properties: OrderedProperties | None = field(
        default=None, metadata=_tag("properties,omitempty")
    )

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ToolProperty:
        kind = raw.get("type")
        nested = raw.get("properties")
        return cls(
            AnyOf=[cls.from_json(item) for item in raw.get("anyOf") or []],
            Type=PropertyType([kind] if isinstance(kind, str) else list(kind or [])),
            Items=raw.get("items"),
            Description=str(raw.get("description") or ""),
            Enum=list(raw.get("enum") or []),
            Properties=_properties(nested, OrderedProperties) if nested else None,
        )

    def to_typescript_type(self) -> str:
        """The type as TypeScript spells it (Ollama's ``toTypeScriptType`` template function)."""
        if self.AnyOf:
            return " | ".join(item.to_typescript_type() for item in self.AnyOf)
        if not self.Type:
            return "any"
        return " | ".join(_TYPESCRIPT_TYPES.get(kind, "any") for kind in self.Type)


_PropertyMap = TypeVar("_PropertyMap", bound=dict[str, "ToolProperty"])


def _properties(raw: Mapping[str, Any], kind: type[_PropertyMap]) -> _PropertyMap:
    return kind({name: ToolProperty.from_json(value or {}) for name, value in raw.items()})


@dataclass(frozen=True, slots=True)
class ToolParameters:
    """A tool's JSON-schema parameters (Ollama's ``templateToolFunctionParameters``)."""

    Type: str = field(default="", metadata=_tag("type"))
    Defs: Any = field(default=None, metadata=_tag("$defs,omitempty"))
    Items: Any = field(default=None, metadata=_tag("items,omitempty"))
    Required: list[str] = field(default_factory=list, metadata=_tag("required,omitempty"))
    Properties: JSONMap | None = field(default=None, metadata=_tag("properties"))

    def go_string(self) -> str:
        return marshal_json(self)


@dataclass(frozen=True, slots=True)
class ToolFunction:
    """Name, description and parameters of a tool (Ollama's ``templateToolFunction``)."""

    Name: str = field(default="", metadata=_tag("name"))
    Description: str = field(default="", metadata=_tag("description"))
    Parameters: ToolParameters = field(default_factory=ToolParameters, metadata=_tag("parameters"))

    def go_string(self) -> str:
        # Printed as JSON, as api.ToolFunction's String method does: templates such as qwen2.5's
        # write {"type": "function", "function": {{ .Function }}}.
        return marshal_json(self)


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool offered to the model (Ollama's ``templateTool``)."""

    Type: str = field(default="function", metadata=_tag("type"))
    Items: Any = field(default=None, metadata=_tag("items,omitempty"))
    Function: ToolFunction = field(default_factory=ToolFunction, metadata=_tag("function"))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Tool:
        function = raw.get("function") or {}
        params = function.get("parameters") or {}
        properties = params.get("properties")
        return cls(
            Type=str(raw.get("type") or "function"),
            Items=raw.get("items"),
            Function=ToolFunction(
                Name=str(function.get("name") or ""),
                Description=str(function.get("description") or ""),
                Parameters=ToolParameters(
                    Type=str(params.get("type") or ""),
                    Defs=params.get("$defs"),
                    Items=params.get("items"),
                    Required=list(params.get("required") or []),
                    Properties=_properties(properties, JSONMap) if properties is not None else None,
                ),
            ),
        )


@dataclass(frozen=True, slots=True)
class ToolCallFunction:
    """The function part of a tool call; ``Arguments`` prints as JSON."""

    Index: int = 0
    Name: str = ""
    Arguments: JSONMap = field(default_factory=JSONMap)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call made by the assistant (Ollama's ``templateToolCall``)."""

    ID: str = ""
    Function: ToolCallFunction = field(default_factory=ToolCallFunction)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ToolCall:
        function = raw.get("function") or {}
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):  # the OpenAI shape: arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = {}
        return cls(
            ID=str(raw.get("id") or ""),
            Function=ToolCallFunction(
                Index=int(function.get("index") or 0),
                Name=str(function.get("name") or ""),
                Arguments=JSONMap(arguments if isinstance(arguments, Mapping) else {}),
            ),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as a template sees it (Ollama's ``templateMessage``)."""

    Role: str
    Content: str = ""
    Thinking: str = ""
    Images: list[str] = field(default_factory=list)
    ToolCalls: list[ToolCall] = field(default_factory=list)
    ToolName: str = ""
    ToolCallID: str = ""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Message:
        return cls(
            Role=str(raw.get("role") or ""),
            Content=str(raw.get("content") or ""),
            Thinking=str(raw.get("thinking") or ""),
            Images=list(raw.get("images") or []),
            ToolCalls=[ToolCall.from_json(call) for call in raw.get("tool_calls") or []],
            ToolName=str(raw.get("tool_name") or ""),
            ToolCallID=str(raw.get("tool_call_id") or ""),
        )


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """API messages as a Go template's ``.Messages``."""
    return [Message.from_json(message) for message in messages]


def template_tools(tools: Sequence[Mapping[str, Any]] | None) -> JSONList | None:
    """API tools as a Go template's ``.Tools`` (None when the request has none, as in Ollama)."""
    if tools is None:
        return None
    return JSONList(Tool.from_json(tool) for tool in tools)
