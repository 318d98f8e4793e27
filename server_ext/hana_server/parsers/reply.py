"""One answer's text split as it streams: thinking, content and tool calls, in Ollama's fields.

`ReplyParser` chains the parsers a request needs: thinking first (what is thinking never holds
calls), then tool calls in the content. `fields` shapes a piece the way /api/generate
(`response`, `thinking`) and /api/chat (`message.content`, `.thinking`, `.tool_calls`) carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hana_server.parsers.harmony import HarmonyParser
from hana_server.parsers.toolcalls import ToolCall, ToolCallParser


@dataclass
class Piece:
    """What one stretch of generated text turned out to be."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.thinking or self.tool_calls)

    def __add__(self, other: Piece) -> Piece:
        return Piece(
            self.content + other.content,
            self.thinking + other.thinking,
            self.tool_calls + other.tool_calls,
        )


class Splitter(Protocol):
    """A parser that separates thinking (and perhaps calls) from content."""

    def add(self, text: str) -> tuple[str, str]: ...
    def finish(self) -> tuple[str, str]: ...


class ReplyParser:
    """Thinking, then tool calls; either may be absent (`think: false`, no `tools`)."""

    def __init__(
        self,
        thinking: Splitter | None = None,
        tools: ToolCallParser | None = None,
        *,
        chat: bool = True,
    ) -> None:
        self.thinking = thinking
        self.tools = tools
        self.chat = chat  # the fields of /api/chat, else those of /api/generate

    def fields(self, piece: Piece) -> dict[str, Any]:
        """`piece` as the text fields of a chunk of this answer."""
        return fields(piece, chat=self.chat)

    def add(self, text: str) -> Piece:
        """What one generated piece of text shows now."""
        thought, content = self.thinking.add(text) if self.thinking else ("", text)
        return self._calls(Piece(thinking=thought), content, final=False)

    def finish(self) -> Piece:
        """What was held back, at the end of generation."""
        thought, content = self.thinking.finish() if self.thinking else ("", "")
        return self._calls(Piece(thinking=thought), content, final=True)

    def _own_calls(self) -> list[ToolCall]:
        # A harmony parser finds calls itself (messages to functions.NAME).
        return self.thinking.take_calls() if isinstance(self.thinking, HarmonyParser) else []

    def _calls(self, piece: Piece, content: str, *, final: bool) -> Piece:
        if self.tools is None:
            piece.content, piece.tool_calls = content, self._own_calls()
            return piece
        shown, calls = self.tools.add(content) if content else ("", [])
        if final:
            rest, more = self.tools.finish()
            shown, calls = shown + rest, calls + more
        piece.content, piece.tool_calls = shown, calls
        return piece


def fields(piece: Piece, *, chat: bool) -> dict[str, Any]:
    """A chunk's text fields for `piece`, in Ollama's key order."""
    if not chat:
        out: dict[str, Any] = {"response": piece.content}
        if piece.thinking:
            out["thinking"] = piece.thinking
        return out
    message: dict[str, Any] = {"role": "assistant", "content": piece.content}
    if piece.thinking:
        message["thinking"] = piece.thinking
    if piece.tool_calls:
        message["tool_calls"] = piece.tool_calls
    return {"message": message}
