"""How torch's OpenMP threads wait for work, chosen by measurement when torch loads.

Between two parallel pieces of work (every matrix product and most elementwise operations),
libgomp's threads either spin, ready to start at once, or sleep and must be woken. Which is
faster depends on whether other processes want the cores. Measured with `python
bench/openmp_wait.py` (a bf16 training step of the demo, 2 cores):
- on idle cores, spinning up to 1,000 times before sleeping made a step 1.7x faster than
  sleeping at once (0.84 s against 1.41 s);
- beside one busy process it made a step 1.5x slower (2.14 s against 1.46 s), and longer spins
  were far worse (12.2 s at 30,000, libgomp's default being 300,000). libgomp's default is why
  every process slept at once before: beside a web server or another worker, 12 tokens of
  generation took 6.7 s spinning against 1.55 s sleeping.

libgomp reads its setting once, when torch loads, so the choice is made then (a hook that
importing `providers` installs runs it as `import torch` starts) and holds for the process: a
process that finds the cores idle then spins briefly, one that finds another process keeping
a core busy sleeps at once. Settings already in the environment (OMP_WAIT_POLICY,
GOMP_SPINCOUNT) win. No torch here: this runs before it loads.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

WAIT_POLICY_SETTING = "OMP_WAIT_POLICY"
SPIN_COUNT_SETTING = "GOMP_SPINCOUNT"
SETTING_NAMES = (WAIT_POLICY_SETTING, SPIN_COUNT_SETTING)
# Spins before a waiting thread sleeps, on idle cores: long enough to cover the Python between
# two operations of a training step, short enough to waste little where a core is taken after
# all (1,000 was as fast as 3,000 on idle cores, and the least harmful beside a busy process).
SHORT_SPIN = 1000
# Other processes keeping this share of a core busy make the cores busy: a waiting thread that
# spins then holds a core that a thread it waits for could have had.
BUSY_CORES = 0.5
SAMPLE_SECONDS = 0.2
# Names the settings this module chose, so that a child process, which inherits them, measures
# its own cores instead of taking them for settings someone gave.
CHOSEN_SETTING = "FTPORTAL_OPENMP_CHOSEN"
PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")


@dataclass(frozen=True)
class CpuSample:
    """Clock ticks since boot: all cores busy, all cores in all, and this process's own."""

    busy: int
    total: int
    own: int


def read_cpu_sample() -> CpuSample | None:
    """The kernel's CPU counters, or None where there are none to read (not Linux)."""
    try:
        cores_line = PROC_STAT.read_text().splitlines()[0]
        own_fields = PROC_SELF_STAT.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # "cpu user nice system idle iowait irq softirq steal ..."; idle and iowait are not busy.
    ticks = [int(value) for value in cores_line.split()[1:]]
    total = sum(ticks[:8])
    idle = ticks[3] + ticks[4]
    # utime and stime: fields 14 and 15 of /proc/PID/stat, 12 and 13 after the command name.
    own = int(own_fields[11]) + int(own_fields[12])
    return CpuSample(busy=total - idle, total=total, own=own)


def busy_cores_of_others(before: CpuSample, after: CpuSample) -> float:
    """How many cores other processes kept busy between the samples, on average."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    cores = os.cpu_count() or 1
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others) * cores / total


GIVEN = "set in the environment"
TOO_LATE = "torch loaded before they could be chosen"


@dataclass(frozen=True)
class OpenMPWaiting:
    """The settings chosen, and why, for the worker log and the job page."""

    settings: dict[str, str]
    reason: str

    def describe(self) -> str:
        chosen = ", ".join(f"{name}={value}" for name, value in self.settings.items())
        return f"OpenMP threads wait with {chosen or 'libgomp defaults'} ({self.reason})"


def settings_in(environment: dict[str, str]) -> dict[str, str]:
    return {name: environment[name] for name in SETTING_NAMES if name in environment}


def choose_waiting(environment: dict[str, str], others_busy_cores: float | None) -> OpenMPWaiting:
    """The settings for this process: the environment's own where it has any, else a short
    spin on idle cores and sleeping at once on busy (or unmeasured) ones."""
    given = settings_in(environment)
    if given:
        return OpenMPWaiting(given, GIVEN)
    if others_busy_cores is None:
        return OpenMPWaiting({WAIT_POLICY_SETTING: "PASSIVE"}, "the cores' use could not be read")
    measured = f"other processes kept {others_busy_cores:.2f} cores busy as torch loaded"
    if others_busy_cores >= BUSY_CORES:
        return OpenMPWaiting({WAIT_POLICY_SETTING: "PASSIVE"}, measured)
    return OpenMPWaiting({SPIN_COUNT_SETTING: str(SHORT_SPIN)}, measured)


def measure_others_busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    before = read_cpu_sample()
    if before is None:
        return None
    time.sleep(seconds)
    after = read_cpu_sample()
    return busy_cores_of_others(before, after) if after is not None else None


@functools.cache
def openmp_waiting() -> OpenMPWaiting:
    """Choose once and put the settings in this process's environment, where torch's libgomp
    reads them when it loads (so before torch loads: see choose_before_torch_loads)."""
    environment = dict(os.environ)
    if "torch" in sys.modules:
        return OpenMPWaiting(settings_in(environment), TOO_LATE)
    inherited_names = environment.pop(CHOSEN_SETTING, "").split(",")
    for inherited in set(inherited_names) & set(SETTING_NAMES):
        environment.pop(inherited, None)
        os.environ.pop(inherited, None)
    measured = None if settings_in(environment) else measure_others_busy_cores()
    waiting = choose_waiting(environment, measured)
    if waiting.reason != GIVEN:
        os.environ.update(waiting.settings)
        os.environ[CHOSEN_SETTING] = ",".join(waiting.settings)
    return waiting


class _ChooseBeforeTorch(importlib.abc.MetaPathFinder):
    """Chooses as `import torch` starts, then steps aside: it finds no module itself."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torch":
            sys.meta_path.remove(self)
            openmp_waiting()
        return None


def choose_before_torch_loads() -> None:
    """Make the choice when torch first loads in this process: measured then, not when the
    process starts (a worker loads torch at its first local job), and never in a process that
    does not load it."""
    if "torch" in sys.modules:
        openmp_waiting()
    elif not any(isinstance(finder, _ChooseBeforeTorch) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ChooseBeforeTorch())
