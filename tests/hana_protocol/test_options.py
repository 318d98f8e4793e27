from __future__ import annotations

import pytest

from hana_protocol.errors import InvalidRequest
from hana_protocol.options import DEFAULTS, merge_options, sampling


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
