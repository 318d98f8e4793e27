"""Request bodies as Ollama reads them: no null fields, keep-alive numbers sent as numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def keep_alive_value(value: str | float | None) -> str | float | None:
    """Ollama reads a JSON number as seconds and a string as a Go duration ("5m", "-1m").

    Users type `--keep-alive -1` or `300` expecting Ollama's CLI meaning, and `"-1"` is not a valid
    Go duration, so plain numbers are sent as numbers.
    """
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
        number = float(value)
        return int(number) if number.is_integer() else number
    return value


def drop_none(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are set: Ollama treats a missing field and a null one alike, older servers
    do not."""
    return {key: value for key, value in payload.items() if value is not None}


def generation_body(model: str, **fields: Any) -> dict[str, Any]:
    """A streaming `/api/generate` or `/api/chat` body from keyword arguments."""
    options = fields.pop("options", None)
    body = drop_none({"model": model, **fields, "stream": True})
    if options:
        body["options"] = drop_none(options)
    if "keep_alive" in body:
        body["keep_alive"] = keep_alive_value(body["keep_alive"])
    return body
