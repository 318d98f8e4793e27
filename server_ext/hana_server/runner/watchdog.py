"""Parent-death watchdog: a runner must never outlive the server that started it.

Two layers: the kernel sends SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG, Linux), and a
thread checks the parent once a second, which also covers other systems and a parent that died
before prctl ran. Either way the runner gets SIGTERM, i.e. the normal clean shutdown; if that has
not ended the process after a grace period, the watchdog exits it hard.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("hana_server.runner")

_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0
HARD_EXIT_AFTER_SECONDS = 3.0


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except OSError as error:
        log.warning("prctl unavailable: %s", error)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def install_parent_watchdog(parent_pid: int | None) -> None:
    """Exit (via SIGTERM to ourselves) when `parent_pid` is gone; without a pid, only prctl."""
    _set_parent_death_signal()
    if parent_pid is None:
        return
    # Started directly by the parent (the normal case): being re-parented is the reliable sign of
    # its death and immune to pid reuse. Started through a wrapper: fall back to probing the pid.
    direct_child = os.getppid() == parent_pid

    def parent_alive() -> bool:
        return os.getppid() == parent_pid if direct_child else _process_exists(parent_pid)

    def watch() -> None:
        while parent_alive():
            time.sleep(POLL_SECONDS)
        log.warning("parent process %d is gone; exiting", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(HARD_EXIT_AFTER_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="hana-parent-watchdog", daemon=True).start()
