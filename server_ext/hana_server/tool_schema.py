"""The shape of a request's `tools`, checked when the body is parsed, as Ollama's Go decoder
checks it (api.Tool): a value of the wrong type is a 400 naming where it is, never a failure
later in the template. Nested properties are walked without recursion."""

from __future__ import annotations

from typing import Any

from hana_protocol.errors import InvalidRequest

_TOOL = {"type": str, "function": dict}
_FUNCTION = {"name": str, "description": str, "parameters": dict}
_PARAMETERS = {"type": str, "required": list, "properties": dict}
_PROPERTY = {"description": str, "enum": list, "anyOf": list, "properties": dict}
_NAMES = {str: "a string", dict: "an object", list: "a list"}


def _fields(value: Any, where: str, schema: dict[str, type]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"invalid tools: {where} must be an object")
    for key, kind in schema.items():
        if value.get(key) is not None and not isinstance(value[key], kind):
            raise InvalidRequest(f"invalid tools: {where}.{key} must be {_NAMES[kind]}")
    return value


def check_tools(tools: Any) -> Any:
    """`tools` itself if well formed; InvalidRequest otherwise."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("invalid tools: tools must be a list")
    todo: list[tuple[Any, str]] = []
    for i, tool in enumerate(tools):
        function = _fields(tool, f"tools[{i}]", _TOOL).get("function") or {}
        where = f"tools[{i}].function"
        parameters = _fields(function, where, _FUNCTION).get("parameters") or {}
        where += ".parameters"
        _fields(parameters, where, _PARAMETERS)
        if not all(isinstance(name, str) for name in parameters.get("required") or []):
            raise InvalidRequest(f"invalid tools: {where}.required must hold strings")
        todo += [
            (p, f"{where}.properties.{k}") for k, p in (parameters.get("properties") or {}).items()
        ]
    while todo:
        prop, where = todo.pop()
        _fields(prop, where, _PROPERTY)
        kind = prop.get("type")
        if kind is not None and not (
            isinstance(kind, str)
            or (isinstance(kind, list) and all(isinstance(k, str) for k in kind))
        ):
            raise InvalidRequest(f"invalid tools: {where}.type must be a string or strings")
        todo += [(p, f"{where}.anyOf[{j}]") for j, p in enumerate(prop.get("anyOf") or [])]
        todo += [(p, f"{where}.properties.{k}") for k, p in (prop.get("properties") or {}).items()]
    return tools
