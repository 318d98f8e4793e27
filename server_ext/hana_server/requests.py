"""Request bodies of the native Ollama API as pydantic models (responses are plain dicts).

Outside api/ on purpose: the handlers parse them and the request logic (generation, service)
reads them, and neither side imports the other through them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from hana_protocol.durations import parse_keep_alive
from hana_protocol.errors import InvalidRequest
from hana_protocol.options import check_option
from hana_server.tool_schema import check_tools


def _checked_keep_alive(value: Any) -> Any:
    # Raises InvalidRequest with Ollama's (Go's) message, which pydantic lets through as is.
    parse_keep_alive(value)
    return value


def _checked_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    if options is None:
        return None
    return {
        key: value if value is None else check_option(key, value) for key, value in options.items()
    }


THINK_LEVELS = ("high", "medium", "low", "max")
_THINK_CHOICES = '"high", "medium", "low", "max", true, or false'


def _checked_think(value: Any) -> Any:
    # Ollama's ThinkValue decoding: a boolean, or one of the levels.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in THINK_LEVELS:
            raise InvalidRequest(
                f"invalid think value: {json.dumps(value)} (must be {_THINK_CHOICES})"
            )
        return value
    raise InvalidRequest(f"think must be a boolean or string ({_THINK_CHOICES})")


# Checked when the body is parsed, so no request with a value the scheduler cannot hold (a
# keep_alive beyond Go's durations, a NaN temperature) ever reaches it.
KeepAlive = Annotated[float | int | str | None, BeforeValidator(_checked_keep_alive)]
Options = Annotated[dict[str, Any] | None, AfterValidator(_checked_options)]
Think = Annotated[bool | str | None, BeforeValidator(_checked_think)]


class Request(BaseModel):
    """Unknown fields are ignored, as Ollama's Go decoder does."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Named(Request):
    """Requests that name a model; older clients send `name`."""

    model: str = ""
    name: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _name_alias(self) -> Named:
        if not self.model and self.name:
            self.model = self.name
        return self


class ToolCallFunction(Request):
    name: str
    arguments: dict[str, Any] = {}
    index: int | None = None


class ToolCall(Request):
    id: str | None = None
    function: ToolCallFunction


class Message(Request):
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _lower(cls, role: str) -> str:
        return role.lower()


class GenerationRequest(Named):
    format: str | dict[str, Any] | None = None
    options: Options = None
    stream: bool | None = True
    keep_alive: KeepAlive = None
    think: Think = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 20:
            raise InvalidRequest("top_logprobs must be between 0 and 20")  # Ollama's words
        return value


class GenerateRequest(GenerationRequest):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[StrictInt] | None = None  # Go's []int: no strings, bools or 1.5
    raw: bool = False
    images: list[str] | None = None


class ChatRequest(GenerationRequest):
    messages: list[Message] = []
    tools: Annotated[list[dict[str, Any]] | None, BeforeValidator(check_tools)] = None


class ShowRequest(Named):
    verbose: bool = False


class CreateRequest(Named):
    from_: str | None = Field(None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    modelfile: str | None = None
    requires: str | None = None
    quantize: str | None = None
    stream: bool | None = True
    # Remote models (hana_server.remote): Ollama's `remote_host` and `info`, and hana's
    # `remote_api` ("ollama" | "openai") and `remote_key_env` (the NAME of the key's variable).
    remote_host: str | None = None
    remote_api: str | None = None
    remote_key_env: str | None = None
    info: dict[str, Any] | None = None


class CopyRequest(Request):
    source: str
    destination: str


class DeleteRequest(Named):
    pass


class EmbedRequest(Named):
    input: str | list[str] = []
    truncate: StrictBool = True  # strict, as Go's decoder: "no" is not a bool, "8" not an int
    dimensions: StrictInt | None = Field(None, ge=0)
    options: Options = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(Named):
    prompt: str = ""
    options: Options = None
    keep_alive: KeepAlive = None


class PullRequest(Named):
    insecure: bool = False
    stream: bool | None = True


DoneReason = Literal["stop", "length", "load", "unload"]
