"""The named Prometheus metrics of one model server (`HanaService.metrics`), served at `/metrics`.

Each service has its own `CollectorRegistry` (several servers may live in one process, e.g. in
tests), so nothing lands in prometheus_client's global registry. Who records what:

- the API handlers: `request_finished` (every answered request, refusals at the door included);
- `GenerationService`: `tokens` (prompt and generated tokens of each answer / embedding);
- the scheduler's events (`listen` on its `EventBus`): loads, load failures, evictions, unloads
  and crashes, with load and eviction durations;
- the pull engine: `pull_finished(outcome, seconds, nbytes)` once per pull (the documented API for
  it: call it exactly once, whatever the outcome);
- at scrape time, from the scheduler's snapshots: queue depth, in-flight requests and runner
  states per model.

Metric names are listed in docs/internals.md ("Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hana_server.scheduler import Scheduler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What users see of a runner (RunnerSnapshot.state); every one is exported, 0 when absent.
RUNNER_STATES = ("loading", "ready", "busy", "expiring")
PULL_OUTCOMES = ("success", "error", "canceled")

# Loading a model takes from milliseconds (a scripted runner) to minutes (a big GGUF from disk).
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))


class SchedulerCollector(Collector):
    """Gauges read from the scheduler's snapshots when scraped (no state of its own)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily(
            "hana_queue_depth",
            "Requests waiting for a slot or a load, per model.",
            labels=["model"],
        )
        in_flight = GaugeMetricFamily(
            "hana_in_flight_requests", "Requests holding a runner now, per model.", labels=["model"]
        )
        states = GaugeMetricFamily(
            "hana_runners", "Runner processes per model and state.", labels=["model", "state"]
        )
        waiting: dict[str, int] = {}
        active: dict[str, int] = {}
        counts: dict[str, dict[str, int]] = {}
        for runner in self.scheduler.ps():
            waiting[runner.name] = waiting.get(runner.name, 0) + runner.queued
            active[runner.name] = active.get(runner.name, 0) + runner.active_requests
            by_state = counts.setdefault(runner.name, dict.fromkeys(RUNNER_STATES, 0))
            by_state[runner.state] = by_state.get(runner.state, 0) + 1
        for entry in self.scheduler.waiting():
            waiting[entry.name] = waiting.get(entry.name, 0) + entry.queued
        for model, value in sorted(waiting.items()):
            queued.add_metric([model], value)
        for model, value in sorted(active.items()):
            in_flight.add_metric([model], value)
        for model, by_state in sorted(counts.items()):
            for state, value in by_state.items():
                states.add_metric([model, state], value)
        yield queued
        yield in_flight
        yield states


class HanaMetrics:
    """The metrics of one `HanaService`, in a registry of their own."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "hana_requests",
            "HTTP requests answered, by route (pattern), method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "hana_request_duration_seconds",
            "Time from request start to the last byte of the answer (streams included).",
            ["route"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "hana_prompt_tokens",
            "Prompt tokens evaluated, per model.",
            ["model"],
            registry=registry,
        )
        self.generated_tokens = Counter(
            "hana_generated_tokens", "Tokens generated, per model.", ["model"], registry=registry
        )
        self.loads = Counter(
            "hana_model_loads",
            "Model loads finished, per model and outcome (ok, failed).",
            ["model", "outcome"],
            registry=registry,
        )
        self.load_duration = Histogram(
            "hana_model_load_duration_seconds",
            "Time from starting a runner to its model being ready.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.evictions = Counter(
            "hana_model_evictions",
            "Runners evicted to make room for another model.",
            ["model"],
            registry=registry,
        )
        self.eviction_duration = Histogram(
            "hana_model_eviction_duration_seconds",
            "Time from choosing a runner for eviction to its process being gone (drain included).",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.unloads = Counter(
            "hana_model_unloads",
            "Runners stopped for any reason (keep-alive, eviction, request, shutdown).",
            ["model"],
            registry=registry,
        )
        self.crashes = Counter(
            "hana_runner_crashes", "Runners that exited on their own.", ["model"], registry=registry
        )
        self.pulls = Counter(
            "hana_pulls",
            "Pulls finished, by outcome (success, error, canceled).",
            ["outcome"],
            registry=registry,
        )
        self.pull_bytes = Counter(
            "hana_pull_bytes", "Bytes downloaded by pulls.", registry=registry
        )
        self.pull_duration = Histogram(
            "hana_pull_duration_seconds",
            "Duration of finished pulls.",
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        registry.register(SchedulerCollector(scheduler))
        self._evicting: dict[str, float] = {}
        scheduler.events.listen(self.scheduler_event)

    # ---------------------------------------------------------------- recording API

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request (`route` is the pattern, e.g. `/api/blobs/{digest}`)."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_duration.labels(route).observe(seconds)

    def tokens(self, model: str, prompt: int, generated: int) -> None:
        """Tokens of one finished answer or embedding call."""
        if prompt:
            self.prompt_tokens.labels(model).inc(prompt)
        if generated:
            self.generated_tokens.labels(model).inc(generated)

    def pull_finished(self, outcome: str, seconds: float, nbytes: int = 0) -> None:
        """One pull ended: `outcome` is success, error or canceled; `nbytes` were downloaded."""
        if outcome not in PULL_OUTCOMES:
            raise ValueError(f"pull outcome must be one of {PULL_OUTCOMES}, not {outcome!r}")
        self.pulls.labels(outcome).inc()
        self.pull_duration.observe(seconds)
        if nbytes:
            self.pull_bytes.inc(nbytes)

    def scheduler_event(self, event: dict[str, Any]) -> None:
        """Count loads, evictions, unloads and crashes from the scheduler's events."""
        kind, model = event.get("event"), event.get("model")
        if not isinstance(model, str):
            return
        if kind == "loaded":
            self.loads.labels(model, "ok").inc()
            self.load_duration.labels(model).observe(float(event.get("seconds", 0.0)))
        elif kind == "load_failed":
            self.loads.labels(model, "failed").inc()
        elif kind == "evicting":
            self.evictions.labels(model).inc()
            self._evicting.setdefault(model, time.monotonic())
        elif kind == "unloaded":
            self.unloads.labels(model).inc()
            started = self._evicting.pop(model, None)
            if started is not None:
                self.eviction_duration.labels(model).observe(time.monotonic() - started)
        elif kind == "crashed":
            self.crashes.labels(model).inc()
            self._evicting.pop(model, None)
        elif kind == "pull" and event.get("status") in ("success", "error"):
            canceled = event.get("error") == "pull canceled"
            outcome = "canceled" if canceled else str(event["status"])
            self.pull_finished(
                outcome, float(event.get("seconds", 0.0)), int(event.get("completed") or 0)
            )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
