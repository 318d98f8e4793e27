"""Request bodies of the OpenAI-compatible `/v1` routes as pydantic models, for the API's OpenAPI
document (`hana_server.api.openapi`). Unknown fields are ignored, as OpenAI's SDKs send many.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class Sampling(OpenAIRequest):
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    response_format: ResponseFormat | None = None


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage]
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str] = ""
    suffix: str | None = None


class OpenAIEmbeddingRequest(OpenAIRequest):
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None
