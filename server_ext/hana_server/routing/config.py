"""Routing settings: the tiers of the `auto` model, each mapped to a model, and how to read them.

Tiers are ordered from the cheapest to the most capable model; their names are whatever the
configuration says (`simple`, `medium`, `complex` by default). `HANA_ROUTES` holds them as
`simple=gemma3:270m,medium=qwen3:1.7b,complex=qwen3:8b` (or the same as a JSON object); under
Jupyter `c.HanaApp.routes = {"simple": "gemma3:270m", ...}`. A request may carry its own table in
the option `hana_routes` (what `%hana route` sends), which replaces the server's for that request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Dict, Float, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from hana_protocol.env import env_value
from hana_protocol.errors import InvalidRequest

DEFAULT_TIERS = ("simple", "medium", "complex")
TIER_OPTION = "hana_tier"  # request option forcing a tier
ROUTES_OPTION = "hana_routes"  # request option replacing the route table
ROUTING_OPTIONS = (TIER_OPTION, ROUTES_OPTION)


def parse_routes(value: str | Mapping[str, Any] | None) -> dict[str, str]:
    """`{tier: model}` in the given order from a mapping, a JSON object or `tier=model,...`.

    Raises InvalidRequest naming the entry at fault: routes come from users (env, config, requests).
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise InvalidRequest(f"routes: invalid JSON: {error}") from None
        else:
            pairs: dict[str, str] = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                tier, sep, model = item.partition("=")
                if not sep:
                    raise InvalidRequest(f"routes: {item!r} is not TIER=MODEL")
                pairs[tier.strip()] = model.strip()
            value = pairs
    if not isinstance(value, Mapping):
        raise InvalidRequest("routes must be an object of tier names to model names")
    routes: dict[str, str] = {}
    for tier, model in value.items():
        if not isinstance(tier, str) or not tier.strip() or ":" in tier or "," in tier:
            raise InvalidRequest(f"routes: invalid tier name {tier!r}")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest(f"routes: tier {tier!r} needs a model name")
        routes[tier.strip().lower()] = model.strip()
    return routes


@dataclass(frozen=True)
class RouteTable:
    """The tiers in order (cheapest first) and the model each one names."""

    routes: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, routes: Mapping[str, str]) -> RouteTable:
        return cls(tuple(routes.items()))

    @property
    def tiers(self) -> list[str]:
        return [tier for tier, _ in self.routes]

    def model(self, tier: str) -> str:
        return dict(self.routes)[tier]

    def __bool__(self) -> bool:
        return bool(self.routes)

    def tier_for_level(self, level: int) -> str:
        """The tier for a complexity level 0 (simple), 1 (medium), 2 (complex) when the table has
        any number of tiers: spread evenly, a level between two tiers going to the larger one."""
        count = len(self.routes)
        return self.routes[(level * (count - 1) + 1) // 2][0]

    def fallback_order(self, tier: str) -> list[str]:
        """`tier`, then the more capable tiers upwards (they can do a simpler task), then the
        cheaper ones downwards (an answer beats an error)."""
        tiers = self.tiers
        index = tiers.index(tier)
        return tiers[index:] + tiers[:index][::-1]


class RoutingSettings(LoggingConfigurable):
    """The router's traits; `HanaSettings` inherits them (`c.HanaApp.routes` under Jupyter)."""

    routes = Dict(
        value_trait=Unicode(),
        help="Tiers of the `auto` model, cheapest first, each naming a model: "
        "{'simple': 'gemma3:270m', 'medium': 'qwen3:1.7b', 'complex': 'qwen3:8b'} "
        "($HANA_ROUTES='simple=gemma3:270m,medium=qwen3:1.7b,complex=qwen3:8b'). Empty: `auto` "
        "is only served to requests that carry their own table (option hana_routes).",
    ).tag(config=True)

    @default("routes")
    def _default_routes(self) -> dict[str, str]:
        return parse_routes(env_value("HANA_ROUTES"))

    @validate("routes")
    def _check_routes(self, proposal: dict[str, Any]) -> dict[str, str]:
        try:
            return parse_routes(proposal["value"])
        except InvalidRequest as error:
            raise ValueError(error.message) from None

    route_name = Unicode(
        help="The model name that routes by task ($HANA_ROUTE_NAME, default 'auto'); "
        "`auto:<tier>` forces a tier."
    ).tag(config=True)

    @default("route_name")
    def _default_route_name(self) -> str:
        return (env_value("HANA_ROUTE_NAME") or "auto").strip().lower()

    route_grading = Bool(
        help="When the rules are unsure, ask the smallest loaded model to grade the task "
        "($HANA_ROUTE_GRADING=1). Off by default: it costs a short generation per such request."
    ).tag(config=True)

    @default("route_grading")
    def _default_route_grading(self) -> bool:
        return (env_value("HANA_ROUTE_GRADING") or "0").lower() in ("1", "true", "yes")

    route_grading_timeout = Float(
        3.0, help="Seconds the grading model may take; then the rules' answer stands."
    ).tag(config=True)
