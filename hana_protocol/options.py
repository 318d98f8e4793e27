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


def check_option(key: str, value: Any) -> Any:
    """Return `value` in the option's type, or raise InvalidRequest naming the option.

    Integers accept any finite number (truncated, as Go's JSON decoding into int does for
    Ollama's map[string]any options); unknown keys pass through unchanged.
    """
    kind = OPTION_KINDS.get(key)
    if kind is None:
        return value
    wrong = InvalidRequest(f'option "{key}" must be of type {kind}')
    if kind in ("integer", "float32"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if not math.isfinite(value):
            raise wrong
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise wrong
        return value
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise wrong
    return list(value)


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
