"""Reading the server's answers: the ONE NDJSON reader and the ONE server-sent-events reader.

Both turn an error into the `hana_protocol.errors` type the server raised: an HTTP status >= 400
before the stream starts, or an `{"error": ...}` line inside a started stream (which keeps the
stream's status, 200).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from hana_protocol.errors import error_for_status


async def raise_for_status(response: httpx.Response) -> None:
    """Raise the server's error (`ModelNotFound`, `InvalidRequest`, ...) for a status >= 400."""
    if response.status_code >= 400:
        await response.aread()
        raise error_for_status(response.status_code, response.text)


async def ndjson(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each line of an NDJSON (Ollama streaming) answer as a dict; blank lines are skipped."""
    await raise_for_status(response)
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        chunk = json.loads(line)
        if isinstance(chunk, dict) and "error" in chunk:
            raise error_for_status(response.status_code, line)
        yield chunk


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Decode `text/event-stream` lines into the JSON objects of their `data:` fields.

    Comments (`: keep-alive`) are skipped; the event name is also inside hana's JSON (`"event"`),
    so the `event:` field is not needed.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of a server-sent-events answer, as dicts."""
    await raise_for_status(response)
    async for event in read_events(response.aiter_lines()):
        yield event
