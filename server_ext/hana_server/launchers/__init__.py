"""The server's side of runners: how they are launched (the protocol the scheduler depends on),
the local-process launcher with its health, watchdog and stderr handling, and the HTTP client that
talks to a runner process. The runner process itself is `hana_server.runner`.
"""

from __future__ import annotations

from hana_server.launchers.cpu import granted_cpus
from hana_server.launchers.http_client import RunnerClient
from hana_server.launchers.process import ProcessLauncher, RunnerProcess
from hana_server.launchers.protocol import (
    LaunchedRunner,
    RunnerConnection,
    RunnerLauncher,
    RunnerSpec,
)

__all__ = [
    "LaunchedRunner",
    "ProcessLauncher",
    "RunnerClient",
    "RunnerConnection",
    "RunnerLauncher",
    "RunnerProcess",
    "RunnerSpec",
    "granted_cpus",
]
