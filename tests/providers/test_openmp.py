"""How torch's OpenMP threads wait: chosen from the cores' use as torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from providers.openmp import (
    BUSY_CORES,
    CHOSEN_SETTING,
    SHORT_SPIN,
    SPIN_COUNT_SETTING,
    WAIT_POLICY_SETTING,
    CpuSample,
    busy_cores_of_others,
    choose_waiting,
    measure_others_busy_cores,
)

REPO = Path(__file__).resolve().parents[2]


def test_idle_cores_get_a_short_spin_and_busy_ones_passive_waiting() -> None:
    idle = choose_waiting({}, 0.05)
    assert idle.settings == {SPIN_COUNT_SETTING: str(SHORT_SPIN)}
    assert "0.05 cores busy" in idle.describe()
    busy = choose_waiting({}, BUSY_CORES)
    assert busy.settings == {WAIT_POLICY_SETTING: "PASSIVE"}
    unread = choose_waiting({}, None)
    assert unread.settings == {WAIT_POLICY_SETTING: "PASSIVE"}
    assert "could not be read" in unread.describe()


def test_settings_in_the_environment_win() -> None:
    given = choose_waiting({WAIT_POLICY_SETTING: "ACTIVE", "PATH": "/bin"}, 0.0)
    assert given.settings == {WAIT_POLICY_SETTING: "ACTIVE"}
    assert given.describe() == (
        "OpenMP threads wait with OMP_WAIT_POLICY=ACTIVE (set in the environment)"
    )
    assert choose_waiting({SPIN_COUNT_SETTING: "5"}, 2.0).settings == {SPIN_COUNT_SETTING: "5"}


def test_the_cores_of_others_leave_this_process_out() -> None:
    cores = os.cpu_count() or 1
    # Over 100 ticks of all cores, 60 busy, 40 of them this process's own: the others kept
    # 20 ticks busy, a fifth of all the cores.
    before = CpuSample(busy=1000, total=5000, own=300)
    after = CpuSample(busy=1060, total=5100, own=340)
    assert busy_cores_of_others(before, after) == pytest.approx(0.2 * cores)
    assert busy_cores_of_others(before, before) == 0.0


def test_a_busy_process_beside_it_is_measured() -> None:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        measured = measure_others_busy_cores(0.5)
    finally:
        hog.kill()
        hog.wait()
    assert measured is not None
    # The hog alone keeps one core busy; the threshold is half of one.
    assert measured >= BUSY_CORES


def _run_child(script: str, environment: dict[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def _without_settings() -> dict[str, str]:
    names = (WAIT_POLICY_SETTING, SPIN_COUNT_SETTING, CHOSEN_SETTING)
    return {key: value for key, value in os.environ.items() if key not in names}


# As a process of the product loads them: providers, then torch.
SETTINGS_AFTER_TORCH = (
    "import os, providers; import torch; "
    "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
)


def test_the_choice_waits_for_torch_to_load() -> None:
    script = "import os, providers; print(os.environ.get('FTPORTAL_OPENMP_CHOSEN')); "
    script += "import torch; print(os.environ.get('FTPORTAL_OPENMP_CHOSEN') is not None)"
    assert _run_child(script, _without_settings()).split() == ["None", "True"]


def test_torch_loaded_first_is_reported_not_pretended() -> None:
    script = "import torch, providers; from providers.openmp import openmp_waiting; "
    script += "print(openmp_waiting().describe())"
    described = _run_child(script, _without_settings())
    assert described.endswith("(torch loaded before they could be chosen)")


def test_a_child_measures_again_instead_of_inheriting_the_choice() -> None:
    environment = _without_settings()
    # As a parent that chose a spin would leave it: the child, beside a busy process, sleeps.
    inherited = {**environment, SPIN_COUNT_SETTING: "1000", CHOSEN_SETTING: SPIN_COUNT_SETTING}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert _run_child(SETTINGS_AFTER_TORCH, inherited) == "None PASSIVE"
    finally:
        hog.kill()
        hog.wait()
    # A setting someone gave is kept.
    given = {**environment, SPIN_COUNT_SETTING: "7"}
    assert _run_child(SETTINGS_AFTER_TORCH, given) == "7 None"
