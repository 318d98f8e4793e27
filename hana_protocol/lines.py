"""`LineBuffer`: complete lines out of a byte stream (NDJSON, SSE), in linear time and bounded.

Network reads cut lines anywhere. Each byte is scanned for a newline once, however many reads a
long line takes, and a line that grows past `max_line` is refused instead of filling memory.
"""

from __future__ import annotations


class LineTooLong(ValueError):
    """The stream sent more than `max_line` bytes without a newline."""


class LineBuffer:
    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline

    def feed(self, data: bytes) -> list[bytes]:
        """The lines `data` completes, without their b"\\n"; keeps the unfinished rest."""
        buffer = self._buffer
        buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", self._scanned)) >= 0:
            lines.append(bytes(buffer[start:end]))
            start = self._scanned = end + 1
        if start:
            del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > self.max_line:
            raise LineTooLong(f"a line longer than {self.max_line} bytes")
        return lines

    def rest(self) -> bytes:
        """What is left after the last newline (a last line the stream did not end)."""
        return bytes(self._buffer)
