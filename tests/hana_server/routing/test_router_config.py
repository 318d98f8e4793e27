"""Route tables: parsing HANA_ROUTES and config, tiers for levels, fallback order, settings."""

from __future__ import annotations

import pytest
from hana_server.config import HanaSettings
from hana_server.routing.config import RouteTable, parse_routes

from hana_protocol.errors import InvalidRequest


def test_routes_parse_from_pairs_json_and_mappings_in_order() -> None:
    expected = {"simple": "gemma3:270m", "medium": "qwen3:1.7b", "complex": "qwen3:8b"}
    assert parse_routes("simple=gemma3:270m, medium=qwen3:1.7b,complex=qwen3:8b") == expected
    assert list(parse_routes('{"complex": "a", "simple": "b"}')) == ["complex", "simple"]
    assert parse_routes({"Fast": "a"}) == {"fast": "a"}
    assert parse_routes("") == {} and parse_routes(None) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("simple", "is not TIER=MODEL"),
        ("simple=", "needs a model name"),
        ("=a", "invalid tier name"),
        ("{nope", "invalid JSON"),
        ('["a"]', "must be an object"),
        ({"a:b": "m"}, "invalid tier name"),
        ({"a": 3}, "needs a model name"),
    ],
)
def test_bad_routes_are_refused_naming_the_entry(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_routes(value)  # type: ignore[arg-type]


def test_levels_spread_over_any_number_of_tiers() -> None:
    three = RouteTable.of({"simple": "a", "medium": "b", "complex": "c"})
    assert [three.tier_for_level(level) for level in range(3)] == ["simple", "medium", "complex"]
    two = RouteTable.of({"fast": "a", "smart": "b"})
    assert [two.tier_for_level(level) for level in range(3)] == ["fast", "smart", "smart"]
    one = RouteTable.of({"only": "a"})
    assert [one.tier_for_level(level) for level in range(3)] == ["only"] * 3


def test_fallback_goes_up_first_then_down() -> None:
    table = RouteTable.of({"simple": "a", "medium": "b", "complex": "c"})
    assert table.fallback_order("simple") == ["simple", "medium", "complex"]
    assert table.fallback_order("medium") == ["medium", "complex", "simple"]
    assert table.fallback_order("complex") == ["complex", "medium", "simple"]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANA_ROUTES", "simple=a,complex=b")
    monkeypatch.setenv("HANA_ROUTE_NAME", "Router")
    monkeypatch.setenv("HANA_ROUTE_GRADING", "1")
    settings = HanaSettings()
    assert settings.routes == {"simple": "a", "complex": "b"}
    assert settings.route_name == "router" and settings.route_grading
    with pytest.raises(Exception, match="invalid tier name"):
        HanaSettings(routes={"a:b": "x"})
    assert HanaSettings(routes={"Simple": "x"}).routes == {"simple": "x"}
