"""The training probe's result kept for this host (providers/local/kept_probe.py): a worker that
starts again reads it instead of measuring, and measures again whenever what it rests on
changed, the file cannot be read, or the first measurement ran beside busy cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from catalog.adapters import fine_tuner_for
from catalog.models import BaseModel
from providers.local import kept_probe, precision
from providers.local.loss import BatchLayout
from providers.local.precision import AdapterShape, TrainingSetup, host_choice
from providers.local.training import LocalLoRAFineTuner
from providers.local.weights import ensure_base_model

DEFAULT_ADAPTER = AdapterShape(8, ("q_proj", "k_proj", "v_proj", "o_proj"))
SHARING: BatchLayout = "sharing its prefix"


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    """Each test starts as a new worker process would: nothing chosen in this process."""
    host_choice.cache_clear()
    yield
    host_choice.cache_clear()


class CountingProbe:
    """Stands in for the probe's timed passes (the real one is covered where it is kept):
    eager is faster, both share prefixes; it takes ``seconds`` of wall time, sleeping."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls = 0
        self.seconds = seconds

    def __call__(
        self, base_model_dir: Path, device: str, adapter: AdapterShape, setups: list[TrainingSetup]
    ) -> tuple[dict[str, float], dict[str, BatchLayout]]:
        self.calls += 1
        time.sleep(self.seconds)
        timings = {setup.label: 0.2 if setup.attention == "sdpa" else 0.1 for setup in setups}
        return timings, dict.fromkeys(timings, SHARING)


def quiet_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite also runs beside CPU hogs; where a test is about keeping, the cores read idle
    (measuring them is tested in test_openmp.py and below)."""
    monkeypatch.setattr(precision, "busy_cores_of_others", lambda before, after: 0.0)


def test_a_worker_that_starts_again_reads_the_kept_result_instead_of_probing(
    base_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet_cores(monkeypatch)
    measured = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    assert measured.probe_seconds, measured.describe()
    assert "kept for this host's later workers" in measured.describe()
    [kept_file] = tmp_path.glob("*.json")
    assert json.loads(kept_file.read_text())["result"]["precision"] == measured.setup.precision

    host_choice.cache_clear()  # a new worker process

    def no_probe(*args: object) -> None:
        raise AssertionError("probed although a result was kept")

    monkeypatch.setattr(precision, "_probe", no_probe)
    read = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    assert read.setup == measured.setup
    # The same timings, fastest first as measured: the setup line lists them in this order.
    assert list(read.probe_seconds.items()) == list(measured.probe_seconds.items())
    assert read.layouts == measured.layouts
    assert read.peak_flops == measured.peak_flops
    assert read.note == measured.note
    assert "kept from a measurement on this host at " in read.describe()


def test_what_the_result_rests_on_is_in_its_key(
    base_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def key(**changes: object) -> dict[str, str]:
        arguments: dict[str, object] = {
            "base_model_dir": base_model_dir,
            "device": "cpu",
            "adapter": "r=8 on q_proj,v_proj",
            "forced_precision": None,
            "openmp": "GOMP_SPINCOUNT=1000",
        } | changes
        return kept_probe.probe_key(**arguments)  # type: ignore[arg-type]

    usual = key()
    assert key() == usual
    assert usual["hardware"] == kept_probe.cpu_model()
    assert usual["threads"] == str(torch.get_num_threads())
    for change in (
        {"adapter": "r=16 on q_proj,v_proj"},
        {"forced_precision": "bf16"},
        {"openmp": "OMP_WAIT_POLICY=PASSIVE"},
        {"device": "cuda:0"} if torch.cuda.is_available() else {"device": "cpu:1"},
    ):
        assert kept_probe.kept_path(tmp_path, key(**change)) != kept_probe.kept_path(
            tmp_path, usual
        ), change
    # Another model, or the same one converted again to files of other sizes.
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_bytes((base_model_dir / "config.json").read_bytes())
    assert key(base_model_dir=other)["model_files"] != usual["model_files"]
    (other / "model.safetensors").write_bytes(b"x")
    digest = kept_probe.model_files_digest(other)
    (other / "model.safetensors").write_bytes(b"xy")
    assert kept_probe.model_files_digest(other) != digest
    # Fewer threads time differently.
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    assert key()["threads"] != usual["threads"]


def test_a_changed_adapter_or_forced_precision_measures_again(
    base_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet_cores(monkeypatch)
    probe = CountingProbe()
    monkeypatch.setattr(precision, "_probe", probe)
    host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    host_choice.cache_clear()
    host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    assert probe.calls == 1

    host_choice.cache_clear()
    host_choice(base_model_dir, "cpu", AdapterShape(16, ("q_proj", "v_proj")), tmp_path)
    assert probe.calls == 2

    host_choice.cache_clear()
    monkeypatch.setenv(precision.PRECISION_SETTING, "fp32")
    forced = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    assert probe.calls == 3
    assert precision.PRECISION_SETTING in forced.describe()
    assert len(list(tmp_path.glob("*.json"))) == 3


def _with_result(stored: dict[str, Any], **changes: str) -> str:
    return json.dumps({"key": stored["key"], "result": stored["result"] | changes})


@pytest.mark.parametrize(
    "spoil",
    [
        lambda stored: "{not json",
        lambda stored: json.dumps({"key": {"probe": "0"}, "result": stored["result"]}),
        lambda stored: _with_result(stored, precision="fp8"),
        lambda stored: _with_result(stored, attention="no-such-kernel"),
        lambda stored: json.dumps({"key": stored["key"], "result": {"precision": "fp32"}}),
    ],
    ids=["not json", "another key", "unknown precision", "a setup not measured", "incomplete"],
)
def test_a_kept_file_that_does_not_read_back_is_measured_again_and_replaced(
    base_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spoil: Callable[[dict[str, Any]], str],
) -> None:
    quiet_cores(monkeypatch)
    probe = CountingProbe()
    monkeypatch.setattr(precision, "_probe", probe)
    first = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    [kept_file] = tmp_path.glob("*.json")
    kept_file.write_text(spoil(json.loads(kept_file.read_text())))

    host_choice.cache_clear()
    again = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    assert probe.calls == 2
    assert again.setup == first.setup == TrainingSetup("fp32", "eager")
    assert "measured at" in again.describe()
    assert json.loads(kept_file.read_text())["result"]["attention"] == "eager"


def test_a_probe_beside_a_busy_process_serves_its_process_but_is_not_kept(
    base_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough for the kernel's counters to see the other process at work.
    probe = CountingProbe(seconds=0.5)
    monkeypatch.setattr(precision, "_probe", probe)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        choice = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER, tmp_path)
    finally:
        hog.kill()
        hog.wait()
    assert choice.setup == TrainingSetup("fp32", "eager")
    assert "beside other processes that kept" in choice.describe()
    assert "so not kept for later workers" in choice.describe()
    assert list(tmp_path.glob("*.json")) == []


def test_a_failed_probe_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet_cores(monkeypatch)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    kept = tmp_path / "kept"
    choice = host_choice(model_dir, "cpu", DEFAULT_ADAPTER, kept)
    assert "probe failed" in choice.describe()
    assert not kept.exists() or list(kept.iterdir()) == []


def test_the_workers_fine_tuner_keeps_its_probe_in_the_model_cache(
    base_model: BaseModel, settings: Any, tmp_path: Path
) -> None:
    settings.FTPORTAL_MODEL_CACHE = tmp_path
    fine_tuner = fine_tuner_for(base_model)
    assert isinstance(fine_tuner, LocalLoRAFineTuner)
    assert fine_tuner.kept_probes == tmp_path / "training-probes"
