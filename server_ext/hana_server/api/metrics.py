"""`GET /metrics`: the service's Prometheus metrics in the text exposition format."""

from __future__ import annotations

from hana_server.api.base import HanaHandlerMixin
from hana_server.metrics import CONTENT_TYPE


class MetricsHandler(HanaHandlerMixin):
    async def get(self) -> None:
        """Every metric of this server (names in docs/internals.md), for Prometheus to scrape."""
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.service.metrics.render())
