"""Runtime options (Ollama's `options`): defaults < Modelfile PARAMETERs < request, type-checked."""

from __future__ import annotations

import logging
from typing import Any

from hana_server.errors import InvalidRequest

log = logging.getLogger("hana.options")

INT_OPTIONS = {
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "draft_num_predict",
}
FLOAT_OPTIONS = {
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
}
BOOL_OPTIONS = {"use_mmap"}
LIST_OPTIONS = {"stop"}
KNOWN_OPTIONS = INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS | LIST_OPTIONS

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

SAMPLING_KEYS = (
    "num_predict",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "num_keep",
)


def check_option(key: str, value: Any) -> Any:
    """Return `value` in the option's type, or raise InvalidRequest naming the option."""
    if key in INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f'option "{key}" must be of type integer')
        return int(value)
    if key in FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f'option "{key}" must be of type float32')
        return float(value)
    if key in BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise InvalidRequest(f'option "{key}" must be of type boolean')
        return value
    if key in LIST_OPTIONS:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest(f'option "{key}" must be of type array of strings')
        return list(value)
    return value


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
