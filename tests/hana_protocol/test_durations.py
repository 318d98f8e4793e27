from __future__ import annotations

import math

import pytest

from hana_protocol.durations import FOREVER, format_duration, parse_env_keep_alive, parse_keep_alive
from hana_protocol.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (0.5, 0.5),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("0", 0.0),
        (-1, FOREVER),
        ("-1m", FOREVER),
    ],
)
def test_keep_alive_values_read_like_ollama(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["300", "5 minutes", "m", "", True, [1]])
def test_bad_keep_alive_is_a_400_with_go_wording(value: object) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_keep_alive(value)
    assert error.value.status == 400


def test_unitless_number_string_names_missing_unit() -> None:
    with pytest.raises(InvalidRequest, match="missing unit"):
        parse_keep_alive("300")


def test_env_var_accepts_plain_seconds() -> None:
    assert parse_env_keep_alive("300") == 300.0
    assert parse_env_keep_alive("10m") == 600.0
    assert parse_env_keep_alive("-1") == FOREVER


def test_format_duration() -> None:
    assert format_duration(299.4) == "4m59s"
    assert format_duration(3600) == "1h"
    assert format_duration(0) == "0s"
    assert format_duration(FOREVER) == "Forever"


@pytest.mark.parametrize("value", [1e300, 10**300, 9_300_000_000, -(10**400)])
def test_keep_alive_beyond_gos_longest_duration_is_forever(value: object) -> None:
    assert parse_keep_alive(value) == FOREVER


@pytest.mark.parametrize(
    "value", ["100000000h", "-100000000h", "9" * 400 + "s", math.nan, math.inf]
)
def test_keep_alive_go_cannot_hold_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_keep_alive(value)
    assert error.value.status == 400
    if isinstance(value, str):
        assert error.value.message == f'time: invalid duration "{value}"'


def test_longest_go_duration_is_accepted() -> None:
    assert parse_keep_alive("2562047h") == 2562047 * 3600
