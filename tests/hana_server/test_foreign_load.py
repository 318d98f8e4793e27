"""ForeignLoad against real processes: a busy program that is not hana is seen and its core left
to it; hana's own busy processes are not counted; the hysteresis keeps threads from flapping."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from hana_server.foreign_load import ForeignLoad

SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"


@pytest.fixture
def busy_process() -> Iterator[subprocess.Popen[bytes]]:
    """A program keeping one core busy (until the test ends, at most a minute)."""
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    yield process
    process.kill()
    process.wait()


def sample(load: ForeignLoad, pids: list[int], seconds: float = 3.0, every: float = 0.5) -> None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        load.update(pids, time.monotonic())
        time.sleep(every)


def test_a_core_kept_busy_by_another_program_is_left_to_it(
    busy_process: subprocess.Popen[bytes],
) -> None:
    load = ForeignLoad()
    sample(load, [])
    assert load.estimate > 0.6, load.estimate
    assert load.reserved >= 1


def test_hana_s_own_processes_are_not_foreign(busy_process: subprocess.Popen[bytes]) -> None:
    """The same busy process counted as one of hana's, sampled at the same moments as a load
    that does not: it counts a core less (whatever else the machine is doing meanwhile)."""
    as_hana, as_other = ForeignLoad(), ForeignLoad()
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        now = time.monotonic()
        as_hana.update([busy_process.pid], now)
        as_other.update([], now)
        time.sleep(0.5)
    assert 0.6 < as_other.estimate - as_hana.estimate < 1.4, (as_other.estimate, as_hana.estimate)


class ScriptedBusy(ForeignLoad):
    """The estimate's arithmetic on given busy seconds (the /proc reading is tested above)."""

    def __init__(self) -> None:
        super().__init__(cpus=[0])
        self.busy = 0.0

    def _busy_seconds(self) -> float:
        return self.busy


@pytest.mark.parametrize(("foreign_cores", "reserved"), [(0.3, 0), (0.9, 1), (1.5, 1), (2.0, 2)])
def test_the_estimate_settles_on_whole_cores(foreign_cores: float, reserved: int) -> None:
    load = ScriptedBusy()
    for second in range(12):
        load.busy = foreign_cores * second
        load.update([], float(second))
    assert load.estimate == pytest.approx(foreign_cores, abs=0.01)
    assert load.reserved == reserved


def test_reserved_cores_do_not_flap_around_a_boundary() -> None:
    """Foreign work hovering around half a core moves `reserved` once, not at every sample."""
    load = ScriptedBusy()
    changes = []
    busy = 0.0
    for second in range(40):
        busy += 0.9 if second < 10 else (0.45 if second % 2 else 0.6)
        load.busy = busy
        load.update([], float(second))
        changes.append(load.changed)
    assert load.reserved == 1
    assert sum(changes) == 1


def test_a_quota_narrower_than_the_cpus_we_see_turns_counting_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a container on a big host the visible CPUs carry other tenants' work: not ours."""
    import hana_server.foreign_load as foreign_load

    assert foreign_load.measurable() is (
        foreign_load.granted_cpus() == foreign_load.affinity_cpus()
    )
    monkeypatch.setattr(foreign_load, "affinity_cpus", lambda: 64)
    monkeypatch.setattr(foreign_load, "granted_cpus", lambda: 2)
    assert foreign_load.measurable() is False
