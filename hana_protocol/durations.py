"""Keep-alive values the way Ollama reads them: seconds, Go duration strings, negative = forever."""

from __future__ import annotations

import math
import re

from hana_protocol.errors import InvalidRequest

FOREVER = math.inf
# Go's time.Duration is an int64 of nanoseconds: about 292 years is the longest duration there is.
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go `time.ParseDuration` string ("5m", "1h30m", "-1m", "0") into seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise InvalidRequest(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            if re.fullmatch(r"[\d.]+", body[pos:]):
                raise InvalidRequest(f'time: missing unit in duration "{text}"')
            raise InvalidRequest(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not total <= MAX_DURATION_SECONDS:  # Go's ParseDuration overflows: the same error
        raise InvalidRequest(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: object) -> float | None:
    """Seconds to keep a model loaded; None when unset, FOREVER when negative.

    Numbers are seconds (as in the API), strings are Go durations; a unit-less numeric
    string is rejected like Ollama does. A number beyond Go's longest duration (~292 years)
    means forever (Ollama's conversion would wrap it to a negative, i.e. unload at once); a
    string beyond it is refused as Go's ParseDuration refuses it. NaN and infinities are not
    JSON and are refused.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a number of seconds or a duration string")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(f"json: unsupported value: {value}")
        if value < 0 or value > MAX_DURATION_SECONDS:
            return FOREVER
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise InvalidRequest("keep_alive must be a number of seconds or a duration string")
    return FOREVER if seconds < 0 else seconds


def parse_env_keep_alive(text: str) -> float:
    """The env var form: a Go duration first, then integer seconds (OLLAMA_KEEP_ALIVE=300 works)."""
    try:
        seconds = parse_go_duration(text)
    except InvalidRequest:
        whole = int(text.strip())
        seconds = FOREVER if whole > MAX_DURATION_SECONDS else float(whole)
    if seconds < 0 or seconds > MAX_DURATION_SECONDS:
        return FOREVER
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: "4m59s", "Forever"."""
    if seconds == FOREVER:
        return "Forever"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
