from __future__ import annotations

import math

import pytest

from hana_protocol.errors import InvalidRequest
from hana_protocol.options import (
    DEFAULTS,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    merge_options,
    sampling,
)


def test_request_beats_model_parameters_beats_defaults() -> None:
    merged = merge_options({"temperature": 0.1, "top_k": 10}, {"temperature": 0.5})
    assert merged["temperature"] == 0.5
    assert merged["top_k"] == 10
    assert merged["top_p"] == DEFAULTS["top_p"]


def test_integers_accept_any_json_number_and_are_truncated() -> None:
    assert merge_options({}, {"num_predict": 12.7})["num_predict"] == 12


def test_unknown_options_are_ignored() -> None:
    assert "mirostat" not in merge_options({}, {"mirostat": 2})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"num_predict": "10"}, 'option "num_predict" must be of type integer'),
        ({"stop": [1, 2]}, 'option "stop" must be of type array of strings'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
    ],
)
def test_wrong_types_name_the_option(options: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        merge_options({}, options)


def test_stop_may_be_one_string() -> None:
    assert merge_options({}, {"stop": "END"})["stop"] == ["END"]


def test_sampling_keeps_only_what_a_runner_needs() -> None:
    options = merge_options({}, {"num_ctx": 512, "seed": 3})
    assert "num_ctx" not in sampling(options)
    assert sampling(options)["seed"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_ctx": math.inf}, 'option "num_ctx" must be of type integer'),
        ({"num_ctx": 1e300}, 'option "num_ctx" must be of type integer'),  # beyond int64
        ({"num_predict": 10**30}, 'option "num_predict" must be of type integer'),
        ({"temperature": math.nan}, 'option "temperature" must be of type float32'),
        ({"top_p": 1e39}, 'option "top_p" must be of type float32'),  # infinite as float32
        ({"repeat_penalty": 10**400}, 'option "repeat_penalty" must be of type float32'),
        ({"stop": ["x"] * (MAX_STOP_STRINGS + 1)}, 'option "stop" takes at most'),
        ({"stop": "x" * (MAX_STOP_LENGTH + 1)}, 'option "stop" takes at most'),
    ],
)
def test_values_no_runner_can_use_are_refused(options: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as error:
        merge_options({}, options)
    assert error.value.status == 400


def test_the_largest_int64_and_the_longest_stop_strings_are_accepted() -> None:
    stops = ["x" * MAX_STOP_LENGTH] * MAX_STOP_STRINGS
    merged = merge_options({}, {"seed": 2**63 - 1, "stop": stops})
    assert merged["seed"] == 2**63 - 1 and merged["stop"] == stops
