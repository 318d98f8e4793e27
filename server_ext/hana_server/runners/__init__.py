"""The server's side of runner processes: spawn, health, watchdog, and the HTTP client."""

from __future__ import annotations

from hana_server.runners.client import RunnerClient
from hana_server.runners.cpu import granted_cpus
from hana_server.runners.process import RunnerProcess

__all__ = ["RunnerClient", "RunnerProcess", "granted_cpus"]
