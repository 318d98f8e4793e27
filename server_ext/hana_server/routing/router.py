"""Resolving the `auto` model name to a concrete model: tier, model, reason, fallback, counts.

A request for `auto` (the configured `route_name`) or `auto:<tier>` is routed before anything is
scheduled: the tier is forced (`auto:<tier>`, option `hana_tier`) or classified (classifier.py,
then optionally graded, grading.py); the tier's model is started through the caller's `start`,
and a tier whose model is missing or cannot load falls back to the next one (more capable tiers
first, then cheaper ones) with a note in the answer's reason. When every tier fails, the request
fails with every tier's error in its message: never silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hana_protocol.errors import (
    HanaError,
    InvalidRequest,
    ModelNotFound,
    ModelTooLarge,
    RunnerFailed,
)
from hana_server.routing.classifier import classify
from hana_server.routing.config import (
    ROUTES_OPTION,
    TIER_OPTION,
    RouteTable,
    RoutingSettings,
    parse_routes,
)
from hana_server.routing.grading import Grader

log = logging.getLogger("hana.routing")

T = TypeVar("T")
# Errors after which the next tier is tried: the tier's model is not there or cannot run.
FALLBACK_ERRORS = (ModelNotFound, RunnerFailed, ModelTooLarge)
# InvalidRequest falls back only for a capability the tier's model lacks (tools, vision, ...):
# any other 400 (a bad option) would fail on every tier alike.
CAPABILITY_MISSING = "does not support"


@dataclass
class Route:
    """Who answered and why: carried by the answer as `hana_route`."""

    requested: str
    tier: str
    model: str
    reason: str
    fallbacks: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        route: dict[str, Any] = {
            "requested": self.requested,
            "tier": self.tier,
            "model": self.model,
            "reason": self.reason,
        }
        if self.fallbacks:
            route["fallbacks"] = list(self.fallbacks)
        return route


@dataclass
class RouteCounts:
    """Requests per tier since the server started (shown by /api/ps and the panel)."""

    requests: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    graded: int = 0
    failed: int = 0


class Router:
    """Chooses the tier and model of each `auto` request; counts what it chose."""

    def __init__(
        self,
        settings: RoutingSettings,
        grader: Grader | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`grader` is asked when the rules are unsure and `settings.route_grading` is on;
        `publish` receives a `route` event (the counts) after each routed request."""
        self.settings = settings
        self.grader = grader
        self.publish = publish
        self.counts = RouteCounts()

    # ------------------------------------------------------------------ names

    @property
    def name(self) -> str:
        return self.settings.route_name.lower()

    def handles(self, model: str) -> bool:
        """Whether `model` names the router: `auto`, `auto:latest` or `auto:<tier>`."""
        base, _, _ = model.strip().lower().partition(":")
        return base == self.name

    def table(self, options: Mapping[str, Any] | None = None) -> RouteTable:
        """The request's own routes (option hana_routes) if any, else the server's."""
        own = (options or {}).get(ROUTES_OPTION)
        return RouteTable.of(parse_routes(own) if own else dict(self.settings.routes))

    def forced_tier(self, model: str, options: Mapping[str, Any] | None, table: RouteTable) -> str:
        """The tier named by `auto:<tier>` or option hana_tier; "" if none."""
        _, _, tag = model.strip().lower().partition(":")
        tier = str((options or {}).get(TIER_OPTION) or (tag if tag != "latest" else "")).lower()
        if tier and tier not in table.tiers:
            raise InvalidRequest(
                f"{self.name}: unknown tier {tier!r}; the tiers are {', '.join(table.tiers)}"
            )
        return tier

    # ------------------------------------------------------------------ choosing

    async def choose(
        self, model: str, options: Mapping[str, Any] | None, prompt: str, context: str = ""
    ) -> tuple[RouteTable, str, str]:
        """(routes, tier, reason) for a request; raises InvalidRequest if there is nothing to
        route to or the forced tier does not exist."""
        table = self.table(options)
        if not table:
            raise InvalidRequest(
                f"{self.name}: no routes configured; set HANA_ROUTES or c.HanaApp.routes "
                "(e.g. simple=gemma3:270m,complex=qwen3:8b), or send the option hana_routes"
            )
        forced = self.forced_tier(model, options, table)
        if forced:
            return table, forced, f"{forced}: forced by the request"
        verdict = classify(prompt, context)
        level, reason = verdict.level, verdict.reason
        if verdict.unsure and self.settings.route_grading and self.grader is not None:
            grade = await self.grader.grade(prompt)
            if grade.level is not None:
                self.counts.graded += 1
                level = grade.level
            reason = f"{reason}; unsure, {grade.note}"
        tier = table.tier_for_level(level)
        return table, tier, reason

    # ------------------------------------------------------------------ answering

    async def answer(
        self,
        model: str,
        options: Mapping[str, Any] | None,
        prompt: str,
        context: str,
        start: Callable[[str], Awaitable[T]],
    ) -> tuple[T, Route]:
        """Start the request on the chosen tier's model (`start(model_name)`), falling back
        along `RouteTable.fallback_order`; returns what `start` returned and the route."""
        table, tier, reason = await self.choose(model, options, prompt, context)
        fallbacks: list[str] = []
        for candidate in table.fallback_order(tier):
            target = table.model(candidate)
            try:
                result = await start(target)
            except (*FALLBACK_ERRORS, InvalidRequest) as error:
                if isinstance(error, InvalidRequest) and CAPABILITY_MISSING not in error.message:
                    raise
                log.warning("%s: tier %s (%s) failed: %s", self.name, candidate, target, error)
                fallbacks.append(f"{candidate} ({target}): {error.message}")
                continue
            if fallbacks:
                self.counts.fallbacks += 1
                reason = f"{reason}; fell back to {candidate}"
            self.counts.requests[candidate] += 1
            self._published()
            return result, Route(model, candidate, target, reason, fallbacks)
        self.counts.failed += 1
        self._published()
        raise HanaError(
            f"{self.name}: no tier could answer ({reason}): " + "; ".join(fallbacks), status=500
        )

    # ------------------------------------------------------------------ counts

    def stats(self) -> dict[str, Any]:
        """The counts and the server's routes, as /api/ps, the status and the panel show them."""
        counts = self.counts
        return {
            "name": self.name,
            "routes": dict(self.settings.routes),
            "requests": dict(counts.requests),
            "fallbacks": counts.fallbacks,
            "graded": counts.graded,
            "failed": counts.failed,
        }

    @property
    def active(self) -> bool:
        """Whether routing is worth showing: routes configured or requests routed."""
        return bool(self.settings.routes) or bool(self.counts.requests) or bool(self.counts.failed)

    def _published(self) -> None:
        if self.publish is not None:
            self.publish({"event": "route", **self.stats()})
