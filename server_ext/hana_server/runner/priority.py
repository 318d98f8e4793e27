"""How a runner uses the CPU: below the server's priority, so the API stays responsive while
models compute, and with OpenMP threads that wait briefly, then sleep (set_openmp_waiting).

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
from collections.abc import MutableMapping

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


# libgomp's own default spins ~300,000 times (nominally 3 ms) before sleeping; PASSIVE alone
# sleeps at once. See set_openmp_waiting.
SPIN_COUNT = "100000"


def set_openmp_waiting(environ: MutableMapping[str, str]) -> None:
    """How OpenMP threads wait, unless the environment chooses (OMP_WAIT_POLICY or
    GOMP_SPINCOUNT): PASSIVE, after spinning up to 100,000 turns (libgomp: ~1 ms).

    With llama.cpp built with OpenMP, its compute threads meet at an OpenMP barrier after every
    operation of the graph, hundreds per token. PASSIVE alone puts a waiting thread to sleep at
    each of them and wakes it with a futex: on a quiet 2-core VM gemma3:270m then decoded 35-42
    tok/s, against 62-79 spinning first. 1,000 turns were enough for one stream but not for a
    4-way step (hana/llama-server 0.97 at 1,000, 0.98 at 20,000, 1.04 at 100,000). Spinning is
    a disaster only when a thread shares its core with someone else's work (2 threads on 2
    cores, one busy elsewhere: 27.8 tok/s at 1,000 turns, 10.8 at 5,000, <1 at 100,000, 44 at
    PASSIVE); the scheduler gives such runners fewer threads instead (foreign_load.py: 48.3
    tok/s there with 1 thread). An idle runner's threads still sleep, after ~1 ms. Measured:
    docs/performance.md.
    """
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
