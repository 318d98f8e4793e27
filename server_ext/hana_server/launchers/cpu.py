"""How many CPUs this process may really use: the smallest of the CPU affinity mask, the cgroup v2
`cpu.max` quota and the cgroup v1 CFS quota (each along the whole cgroup path, since a parent's
limit binds its children). `os.cpu_count()` ignores all of these and, in a container, can report
the host's 64 cores for a 2-CPU quota: thread oversubscription then costs an order of magnitude.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def granted_cpus(
    *, proc_self_cgroup: Path = PROC_SELF_CGROUP, cgroup_root: Path = CGROUP_ROOT
) -> int:
    """CPUs granted to this process, at least 1 (quotas are rounded up: 1.5 CPUs -> 2)."""
    limits = [affinity_cpus()]
    memberships = _read_memberships(proc_self_cgroup)
    for limit in (
        _cgroup_v2_limit(memberships, cgroup_root),
        _cgroup_v1_limit(memberships, cgroup_root),
    ):
        if limit is not None:
            limits.append(limit)
    return max(1, min(limits))


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read_memberships(proc_self_cgroup: Path) -> list[tuple[list[str], str]]:
    """(controllers, path) per line of /proc/self/cgroup; v2 is the line with no controllers."""
    try:
        text = proc_self_cgroup.read_text()
    except OSError:
        return []
    memberships = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            controllers = [name for name in parts[1].split(",") if name]
            memberships.append((controllers, parts[2] or "/"))
    return memberships


def _ancestors(mount: Path, cgroup_path: str) -> list[Path]:
    """The cgroup's directory and every parent up to the mount point. In a container the path in
    /proc/self/cgroup may be the host's; the mount point itself is then the container's cgroup."""
    relative = Path(cgroup_path.lstrip("/"))
    directories = [mount / relative, *[mount / parent for parent in relative.parents]]
    return list(dict.fromkeys(directories))


def _quota_cpus(quota: float, period: float) -> int | None:
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _cgroup_v2_limit(memberships: list[tuple[list[str], str]], root: Path) -> int | None:
    paths = [path for controllers, path in memberships if not controllers]
    if not paths:
        return None
    mounts = [
        mount for mount in (root, root / "unified") if (mount / "cgroup.controllers").exists()
    ]
    limits: list[int] = []
    for mount in mounts:
        for directory in _ancestors(mount, paths[0]):
            try:
                quota, period = (directory / "cpu.max").read_text().split()[:2]
            except (OSError, ValueError):
                continue
            if quota != "max":
                limit = _quota_cpus(float(quota), float(period))
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def _cgroup_v1_limit(memberships: list[tuple[list[str], str]], root: Path) -> int | None:
    cpu_lines = [(controllers, path) for controllers, path in memberships if "cpu" in controllers]
    if not cpu_lines:
        return None
    controllers, path = cpu_lines[0]
    mounts = [root / ",".join(controllers), root / "cpu", root / "cpu,cpuacct"]
    limits: list[int] = []
    for mount in dict.fromkeys(mounts):
        if not mount.is_dir():
            continue
        for directory in _ancestors(mount, path):
            try:
                quota = float((directory / "cpu.cfs_quota_us").read_text())
                period = float((directory / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            limit = _quota_cpus(quota, period)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None
