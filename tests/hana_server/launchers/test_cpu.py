"""granted_cpus: the smallest of affinity, cgroup v2 cpu.max and cgroup v1 CFS quota."""

from __future__ import annotations

import os
from pathlib import Path

from hana_server.launchers.cpu import granted_cpus

AFFINITY = len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_cgroup_information_means_the_affinity_mask(tmp_path: Path) -> None:
    assert granted_cpus(proc_self_cgroup=tmp_path / "missing", cgroup_root=tmp_path) == AFFINITY


def test_cgroup_v2_quota_is_rounded_up(tmp_path: Path) -> None:
    write(tmp_path / "self_cgroup", "0::/user.slice/job\n")
    write(tmp_path / "fs" / "cgroup.controllers", "cpu memory\n")
    write(tmp_path / "fs" / "user.slice" / "job" / "cpu.max", "50000 100000\n")  # half a CPU
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=tmp_path / "fs") == 1


def test_cgroup_v2_parent_limit_binds_the_child(tmp_path: Path) -> None:
    write(tmp_path / "self_cgroup", "0::/outer/inner\n")
    root = tmp_path / "fs"
    write(root / "cgroup.controllers", "cpu\n")
    write(root / "outer" / "cpu.max", "100000 100000\n")  # 1 CPU for the parent
    write(root / "outer" / "inner" / "cpu.max", "max 100000\n")  # unlimited child
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=root) == 1


def test_cgroup_v2_unlimited_means_the_affinity_mask(tmp_path: Path) -> None:
    write(tmp_path / "self_cgroup", "0::/\n")
    write(tmp_path / "fs" / "cgroup.controllers", "cpu\n")
    write(tmp_path / "fs" / "cpu.max", "max 100000\n")
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=tmp_path / "fs") == (
        AFFINITY
    )


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    write(tmp_path / "self_cgroup", "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    mount = tmp_path / "fs" / "cpu,cpuacct"
    write(mount / "docker" / "abc" / "cpu.cfs_quota_us", "100000\n")
    write(mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=tmp_path / "fs") == 1


def test_cgroup_v1_container_sees_its_own_cgroup_at_the_mount_point(tmp_path: Path) -> None:
    # Inside a container /proc/self/cgroup names the host path, which is not mounted there.
    write(tmp_path / "self_cgroup", "3:cpu:/kubepods/pod1/c1\n")
    mount = tmp_path / "fs" / "cpu"
    write(mount / "cpu.cfs_quota_us", "100000\n")
    write(mount / "cpu.cfs_period_us", "100000\n")
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=tmp_path / "fs") == 1


def test_cgroup_v1_unlimited_quota(tmp_path: Path) -> None:
    write(tmp_path / "self_cgroup", "1:cpu:/\n")
    write(tmp_path / "fs" / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "fs" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert granted_cpus(proc_self_cgroup=tmp_path / "self_cgroup", cgroup_root=tmp_path / "fs") == (
        AFFINITY
    )


def test_this_machine() -> None:
    assert 1 <= granted_cpus() <= AFFINITY
