"""Request bodies of the OpenAI-compatible `/v1` routes as pydantic models.

Every field a handler reads is declared with its type, so a malformed body (`messages: [1]`,
`response_format: "json"`, `stream_options: 5`) is refused with a 400 naming the field before
anything is scheduled; the handlers then translate these models onto the native requests. Unknown
fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from hana_protocol.errors import InvalidRequest
from hana_server.tool_schema import check_tools


def _required(model: str) -> str:
    if not model:
        raise InvalidRequest("model is required")
    return model


RequiredModel = Annotated[str, AfterValidator(_required)]


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(OpenAIRequest):
    type: str
    text: str = ""


class FunctionCall(OpenAIRequest):
    name: str
    arguments: str | dict[str, Any] | None = None  # OpenAI sends a JSON string


class OpenAIToolCall(OpenAIRequest):
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class ChatMessage(OpenAIRequest):
    role: str = "user"
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    reasoning: str | None = None  # earlier thinking, as Ollama's /v1 names it

    def text(self) -> str:
        """The content as text: a string, or the text parts of a list of content parts."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for part in self.content:
            if part.type == "image_url":
                raise InvalidRequest("images are not supported by this model")
            if part.type != "text":
                raise InvalidRequest("invalid message content type")
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


class JsonSchema(OpenAIRequest):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class ResponseFormat(OpenAIRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    def native(self) -> str | dict[str, Any] | None:
        """Ollama's `format`: "json", a JSON schema, or nothing."""
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            schema = self.json_schema.schema_ if self.json_schema is not None else None
            return schema or "json"
        return None


class Sampling(OpenAIRequest):
    """What both completion routes share: the model, streaming, sampling and format fields."""

    model: RequiredModel = Field("", validate_default=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    hana_tier: str | None = None  # forces a tier of `auto` (openai: extra_body={"hana_tier": ...})

    def options(self) -> dict[str, Any]:
        """OpenAI sampling fields as Ollama options (OpenAI's defaults where they differ)."""
        options: dict[str, Any] = {
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
        }
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            options["num_predict"] = limit
        for key in ("seed", "frequency_penalty", "presence_penalty"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        if self.stop is not None:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if self.hana_tier:
            options["hana_tier"] = self.hana_tier
        return options

    def format(self) -> str | dict[str, Any] | None:
        return self.response_format.native() if self.response_format is not None else None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class Reasoning(OpenAIRequest):
    effort: str | None = None


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage]
    tools: Annotated[list[dict[str, Any]] | None, BeforeValidator(check_tools)] = None
    reasoning_effort: str | None = None
    reasoning: Reasoning | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not messages:
            raise InvalidRequest("[] is too short - 'messages'")
        return messages


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field("", validate_default=True)  # a missing prompt is refused too
    suffix: str | None = None
    logprobs: int | None = None  # N > 0: logprobs with N alternatives per token

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str:
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequest("invalid type for 'prompt' field: expected a string")
            prompt = prompt[0]
        if not prompt:
            raise InvalidRequest("prompt is required")
        return prompt


class EmbeddingRequest(OpenAIRequest):
    model: RequiredModel = Field("", validate_default=True)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=0)

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> list[str]:
        inputs = [value] if isinstance(value, str) else value
        if not inputs:
            raise InvalidRequest("invalid input")
        return inputs
