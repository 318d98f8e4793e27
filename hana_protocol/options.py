"""Ollama's runtime options (`options`, Modelfile PARAMETERs): one table of names, types, defaults.

The server merges and checks them (defaults < Modelfile PARAMETERs < request); the runner reads the
sampling part; the Modelfile parser types PARAMETER values with the same table. Non-finite numbers
are refused everywhere: NaN or infinity in a sampler or a context size has no meaning.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from hana_protocol.errors import InvalidRequest

log = logging.getLogger("hana.options")

OptionKind = Literal["integer", "float32", "boolean", "array of strings"]

# name -> the type's name in Ollama's error messages
OPTION_KINDS: dict[str, OptionKind] = {
    **dict.fromkeys(
        ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed",
         "num_predict", "top_k", "repeat_last_n", "draft_num_predict"),
        "integer",
    ),
    **dict.fromkeys(
        ("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
         "frequency_penalty"),
        "float32",
    ),
    "use_mmap": "boolean",
    "stop": "array of strings",
}  # fmt: skip

INT_OPTIONS = frozenset(k for k, kind in OPTION_KINDS.items() if kind == "integer")
FLOAT_OPTIONS = frozenset(k for k, kind in OPTION_KINDS.items() if kind == "float32")
BOOL_OPTIONS = frozenset(k for k, kind in OPTION_KINDS.items() if kind == "boolean")
LIST_OPTIONS = frozenset(k for k, kind in OPTION_KINDS.items() if kind == "array of strings")
KNOWN_OPTIONS = frozenset(OPTION_KINDS)

# Ollama's defaults for the options every request gets (the rest depend on the model or machine).
DEFAULTS: dict[str, Any] = {
    "num_keep": 4,
    "seed": -1,
    "num_predict": -1,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "temperature": 0.8,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}

# What a runner needs for one sequence.
SAMPLING_KEYS = (*DEFAULTS, "stop")

# Go's int is an int64: an integer option outside it has no meaning (Go's float64-to-int64
# conversion would make garbage of it), so it is refused like a value of the wrong type.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
# Every stop string is matched against every generated token in the runner and held in its
# memory per sequence: a bounded number of bounded strings (OpenAI allows 4; Ollama sets none).
MAX_STOP_STRINGS = 64
MAX_STOP_LENGTH = 4096


def check_option(key: str, value: Any) -> Any:
    """Return `value` in the option's type, or raise InvalidRequest naming the option.

    Integers accept any finite number within int64 (truncated, as Go's JSON decoding into int
    does for Ollama's map[string]any options); floats must be finite; `stop` takes at most
    MAX_STOP_STRINGS strings of at most MAX_STOP_LENGTH characters. Unknown keys pass through
    unchanged.
    """
    kind = OPTION_KINDS.get(key)
    if kind is None:
        return value
    wrong = InvalidRequest(f'option "{key}" must be of type {kind}')
    if kind in ("integer", "float32"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if isinstance(value, float) and not math.isfinite(value):
            raise wrong
        if kind == "float32":
            # Beyond float32's range the value would be an infinity inside the sampler.
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
                raise wrong
            return float(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise wrong
        return int(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise wrong
        return value
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
        raise wrong
    if len(stops) > MAX_STOP_STRINGS or any(len(item) > MAX_STOP_LENGTH for item in stops):
        raise InvalidRequest(
            f'option "stop" takes at most {MAX_STOP_STRINGS} strings of at most '
            f"{MAX_STOP_LENGTH} characters"
        )
    return list(stops)


def merge_options(
    model_parameters: dict[str, Any], request: dict[str, Any] | None
) -> dict[str, Any]:
    """Built-in defaults < the model's PARAMETERs < the request's options."""
    merged = dict(DEFAULTS)
    for source in (model_parameters, request or {}):
        for key, value in source.items():
            if key not in KNOWN_OPTIONS:
                log.warning("invalid option provided: %s (ignored)", key)
                continue
            if value is None:
                continue
            merged[key] = check_option(key, value)
    return merged


def sampling(options: dict[str, Any]) -> dict[str, Any]:
    """The part of the options a runner needs for one sequence."""
    return {key: options[key] for key in SAMPLING_KEYS if key in options}
