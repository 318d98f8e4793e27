"""Run a runner below the server's CPU priority, so the API stays responsive while models compute.

On a machine with few cores the runners' compute threads take every cycle they are given. The
server (Jupyter's event loop, under the extension) must still answer at once, so runners give way
with `os.nice`. That needs no privilege and costs nothing when the CPU is otherwise idle.

Runners stay in the server's session (their own process group, not their own session): Linux
with `sched_autogroup_enabled` (most desktop kernels) shares the CPU fairly between sessions
first, so a runner leading a session of its own would get as much CPU as the whole server's
session however high its nice value. Measured with `make soak` (docs/performance.md).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def lower_priority(niceness: int) -> None:
    """Raise this process's nice value by `niceness`; 0 changes nothing.

    Call it before any thread starts: threads inherit the value only when they are created.
    """
    if niceness <= 0:
        return
    try:
        os.nice(niceness)
    except OSError as error:  # refused: run at normal priority
        log.info("could not lower the runner's priority: %s", error)
