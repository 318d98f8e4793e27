"""`Answer`: a generate or chat result folded from its stream, text plus Ollama's final metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_METRICS = (
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "load_duration",
    "total_duration",
)


@dataclass
class Answer:
    """The result of a generate or chat request: the text plus Ollama's final metrics.

    Built chunk by chunk with `add`, so a streamed answer and a collected one are the same object.
    Durations are in nanoseconds, as Ollama reports them.
    """

    model: str
    text: str = ""
    thinking: str = ""
    done: bool = False
    done_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Per token, when asked for: {"token", "logprob", "bytes", "top_logprobs"?}
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    # /api/generate's final `context`: pass it back to continue this exchange
    context: list[int] | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    final: dict[str, Any] = field(default_factory=dict, repr=False)

    def add(self, chunk: Mapping[str, Any]) -> str:
        """Fold one generate or chat chunk in; return the text it added."""
        message = chunk.get("message")
        if isinstance(message, Mapping):
            delta = str(message.get("content") or "")
            self.thinking += str(message.get("thinking") or "")
            self.tool_calls.extend(message.get("tool_calls") or [])
        else:
            delta = str(chunk.get("response") or "")
            self.thinking += str(chunk.get("thinking") or "")
        self.text += delta
        self.logprobs.extend(chunk.get("logprobs") or [])
        if chunk.get("done"):
            self.done = True
            self.done_reason = chunk.get("done_reason")
            if isinstance(chunk.get("context"), list):
                self.context = list(chunk["context"])
            self.final = dict(chunk)
            for name in _METRICS:
                setattr(self, name, int(chunk.get(name) or 0))
        return delta

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed from `eval_count / eval_duration`, or None before the end."""
        if self.eval_count <= 0 or self.eval_duration <= 0:
            return None
        return self.eval_count / (self.eval_duration / 1e9)

    @property
    def message(self) -> dict[str, Any]:
        """The answer as a chat message, ready to append to a conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        return message

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.text
