"""How local training runs fastest on this host, chosen by measuring it.

A CPU with bf16 matrix units (AMX, AVX-512 bf16) multiplies bf16 matrices several times faster
than fp32 ones, but a training step is more than its matrix products: elementwise work, casts and
attention kernels can be slower in bf16, and which attention kernel is fastest differs from one
CPU to the next. So instead of trusting a capability flag, the probe times a forward and
backward pass through the first few decoder layers of the base model itself, packed as training
packs it, in each candidate way (fp32 or bf16 frozen weights; torch's fused attention, the
plain one, or the fused one computed in fp32 inside a bf16 model), and picks the fastest. LoRA
weights and the optimizer's state stay in fp32 whatever the choice (peft keeps adapters in fp32
on a bf16 base).

FTPORTAL_LOCAL_PRECISION forces the precision (fp32 or bf16; auto, the default, measures); the
attention kernel is still chosen by measurement within it. The choice is made once per process
and base model (once per host, where the worker keeps it: kept_probe.py), and also gives the
host's peak matrix-product rate in that precision, against which a job's model FLOP utilisation
is reported.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from peft import LoraConfig, get_peft_model
from transformers import AttentionInterface, AutoModelForCausalLM, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.utils import logging as hf_logging

from providers.base import ProviderError
from providers.openmp import BUSY_CORES, busy_cores_of_others, openmp_waiting, read_cpu_sample

from . import kept_probe
from .loss import BATCH_LAYOUTS, BatchLayout, batch_layout

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
PRECISION_SETTING = "FTPORTAL_LOCAL_PRECISION"
# torch's fused attention with its inputs cast to fp32 and its output back: in a bf16 model, the
# fp32 kernel can beat the bf16 one on CPUs (measured 34 ms against 176 ms a step on this
# project's machine).
SDPA_IN_FP32 = "sdpa_fp32"
TODAYS_ATTENTION = "sdpa"

# The probe: this many decoder layers (each costs the same, so a few predict them all), on the
# two kinds of batch training makes: examples of similar length, one a row (a causal mask), and
# examples packed several to a row (a block mask, which attention kernels handle differently).
# As (rows, tokens a row, examples a row); each 512 tokens.
PROBE_LAYERS = 4
PROBE_BATCHES = ((4, 128, 1), (2, 256, 2))
PROBE_PASSES = 2
PEAK_MATRIX_SIZE = 2048


def precision_dtype(precision: Precision) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32


@dataclass(frozen=True)
class TrainingSetup:
    """The dtype of the frozen base weights and the attention kernel a local job trains with."""

    precision: Precision
    attention: str

    @property
    def dtype(self) -> torch.dtype:
        return precision_dtype(self.precision)

    @property
    def label(self) -> str:
        return f"{self.precision}/{self.attention}"


@dataclass(frozen=True)
class HostChoice:
    """The setup chosen for a base model on this host and what the choice rests on."""

    setup: TrainingSetup
    # Median seconds of the probe's pass for each candidate, fastest first; empty when the
    # model could not be probed.
    probe_seconds: dict[str, float] = field(default_factory=dict)
    # The best rate of a large matrix product in setup.precision: what MFU is measured against.
    peak_flops: float = 0.0
    # Why the candidates were what they were (a forced precision, no bf16 support).
    note: str = ""
    # The batch layout (loss.BATCH_LAYOUTS) each probed candidate allows.
    layouts: dict[str, BatchLayout] = field(default_factory=dict)
    # Whether it was measured now or read as kept from an earlier measurement (kept_probe.py),
    # and when; empty where nothing is kept.
    provenance: str = ""

    def describe(self) -> str:
        """One line for the worker log and the job page."""
        setup = self.setup
        text = f"Training in {setup.precision} with {setup.attention} attention"
        layout = self.layouts.get(setup.label)
        passed_over = [label for label, other in self.layouts.items() if other != layout]
        if len(self.probe_seconds) > 1:
            timings = ", ".join(
                f"{label} {seconds * 1000:.0f} ms" for label, seconds in self.probe_seconds.items()
            )
            among = f" of those that lay batches out {layout}" if passed_over else ""
            text += f": fastest{among} in a probe pass of {PROBE_LAYERS} layers ({timings})"
        if passed_over:
            listed = ", ".join(f"{label} {self.layouts[label]}" for label in passed_over)
            text += f"; the others lay them out {listed}"
        if self.note:
            text += f"; {self.note}"
        if self.peak_flops:
            text += f"; this host's peak {setup.precision} matrix product: "
            text += f"{self.peak_flops / 1e9:,.0f} GFLOP/s"
        if self.provenance:
            text += f"; {self.provenance}"
        # How long a thread spins before it sleeps changed a step's time 1.7x (openmp.py).
        return f"{text}; {openmp_waiting().describe()}"


def _sdpa_in_fp32(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    output, _ = sdpa_attention_forward(
        module, query.float(), key.float(), value.float(), attention_mask, **kwargs
    )
    return output.to(query.dtype), None


AttentionInterface.register(SDPA_IN_FP32, _sdpa_in_fp32)
ALL_MASK_ATTENTION_FUNCTIONS.register(SDPA_IN_FP32, sdpa_mask)


def bf16_matrix_support(device: str) -> bool:
    """Whether the device multiplies bf16 matrices natively (a GPU that supports bf16; a CPU
    whose oneDNN has bf16 kernels, which needs AVX-512 bf16 or AMX)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def forced_precision() -> Precision | None:
    """FTPORTAL_LOCAL_PRECISION: fp32 or bf16, or None for auto (unset, empty or "auto")."""
    value = os.environ.get(PRECISION_SETTING, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in PRECISIONS:
        raise ProviderError(f"{PRECISION_SETTING} must be auto, fp32 or bf16, not {value!r}")
    return value


def candidate_setups(device: str, forced: Precision | None) -> tuple[list[TrainingSetup], str]:
    """The setups worth timing here, and a note on why some are missing."""
    precisions: list[Precision]
    note = ""
    if forced is not None:
        precisions = [forced]
        note = f"precision forced by {PRECISION_SETTING}"
        if forced == "bf16" and not bf16_matrix_support(device):
            note += f"; {device} has no bf16 matrix support, so bf16 runs emulated and slow"
    elif bf16_matrix_support(device):
        precisions = ["fp32", "bf16"]
    else:
        precisions = ["fp32"]
        note = f"no bf16 matrix support on {device}"
    setups = []
    for precision in precisions:
        setups += [TrainingSetup(precision, "sdpa"), TrainingSetup(precision, "eager")]
        if precision == "bf16":
            setups.append(TrainingSetup(precision, SDPA_IN_FP32))
    return setups, note


@dataclass(frozen=True)
class AdapterShape:
    """What of a job's LoRA settings changes the cost of a step."""

    rank: int
    target_modules: tuple[str, ...]


@functools.cache
def host_choice(
    base_model_dir: Path, device: str, adapter: AdapterShape, kept_in: Path | None = None
) -> HostChoice:
    """The fastest setup for training this adapter on this model here, among those that lay
    batches out in the fewest tokens; measured once per process, and once per host where
    ``kept_in`` names a directory to keep the result in (kept_probe.py)."""
    forced = forced_precision()
    if kept_in is None:
        return _measured_choice(base_model_dir, device, adapter, forced)
    key = kept_probe.probe_key(
        base_model_dir=base_model_dir,
        device=device,
        adapter=f"r={adapter.rank} on {','.join(adapter.target_modules)}",
        forced_precision=forced,
        openmp=" ".join(f"{k}={v}" for k, v in sorted(openmp_waiting().settings.items())),
    )
    record = kept_probe.read_kept(kept_in, key)
    kept = _choice_from_record(record) if record is not None else None
    if kept is not None:
        logger.info("%s (%s)", kept.describe(), base_model_dir)
        return kept
    before = read_cpu_sample()
    choice = _measured_choice(base_model_dir, device, adapter, forced)
    after = read_cpu_sample()
    if not choice.probe_seconds:
        return choice
    others = busy_cores_of_others(before, after) if before and after else None
    return _kept_if_quiet(choice, others, kept_in, key)


def _kept_if_quiet(
    choice: HostChoice, others_busy_cores: float | None, kept_in: Path, key: dict[str, str]
) -> HostChoice:
    """The choice, kept for the host's later workers where no other process kept the cores
    busy while it was measured (it timed them too otherwise, and serves this process only)."""
    if others_busy_cores is None:
        reason = "the cores' use could not be read"
        return replace(choice, provenance=f"measured now; not kept for later workers, as {reason}")
    if others_busy_cores >= BUSY_CORES:
        return replace(
            choice,
            provenance="measured now, beside other processes that kept "
            f"{others_busy_cores:.2f} cores busy, so not kept for later workers",
        )
    measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path = kept_probe.keep(kept_in, key, _choice_record(choice, measured_at))
    logger.info("kept the training probe's result for this host in %s", path)
    return replace(
        choice, provenance=f"measured at {measured_at} and kept for this host's later workers"
    )


def _measured_choice(
    base_model_dir: Path, device: str, adapter: AdapterShape, forced: Precision | None
) -> HostChoice:
    setups, note = candidate_setups(device, forced)
    try:
        seconds, layouts = _probe(base_model_dir, device, adapter, setups)
    except (RuntimeError, ValueError, OSError, AttributeError, TypeError) as error:
        # An architecture the probe cannot drive trains as before: fp32 unless forced.
        logger.warning("training probe failed for %s: %s", base_model_dir, error)
        fallback = TrainingSetup(forced or "fp32", TODAYS_ATTENTION)
        return HostChoice(
            fallback, {}, peak_matrix_flops(fallback.precision, device), f"probe failed: {error}"
        )
    ranked = dict(sorted(seconds.items(), key=lambda item: item[1]))
    best = fastest_with_the_best_layout(setups, ranked, layouts)
    choice = HostChoice(best, ranked, peak_matrix_flops(best.precision, device), note, layouts)
    logger.info("%s (%s)", choice.describe(), base_model_dir)
    return choice


def _choice_record(choice: HostChoice, measured_at: str) -> dict[str, Any]:
    return {
        "precision": choice.setup.precision,
        "attention": choice.setup.attention,
        "probe_seconds": choice.probe_seconds,
        "peak_flops": choice.peak_flops,
        "note": choice.note,
        "layouts": choice.layouts,
        "measured_at": measured_at,
    }


def _choice_from_record(record: dict[str, Any]) -> HostChoice | None:
    """The kept choice, or None where the record is not one this version wrote."""
    try:
        precision = record["precision"]
        layouts = {str(label): layout for label, layout in record["layouts"].items()}
        timed = record["probe_seconds"].items()
        # Fastest first, as measured (the file holds them in the order of their labels).
        seconds = {str(label): float(value) for label, value in sorted(timed, key=lambda i: i[1])}
        setup = TrainingSetup(precision, str(record["attention"]))
        if precision not in PRECISIONS or any(v not in BATCH_LAYOUTS for v in layouts.values()):
            raise ValueError("an unknown precision or layout")
        if setup.label not in seconds or setup.label not in layouts:
            raise ValueError(f"{setup.label} is not among the setups it measured")
        return HostChoice(
            setup,
            seconds,
            float(record["peak_flops"]),
            str(record["note"]),
            layouts,
            f"kept from a measurement on this host at {record['measured_at']}",
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        logger.warning("measuring again: the kept probe result does not read back: %s", error)
        return None


def fastest_with_the_best_layout(
    setups: list[TrainingSetup], seconds: dict[str, float], layouts: dict[str, BatchLayout]
) -> TrainingSetup:
    """The fastest setup among those that allow the best batch layout any of them allows.

    A layout that runs fewer tokens saves more than the kernels' speeds differ: a shared
    prefix ran 1.3x faster a step on the demo (bench/shared_prefix.py), where the probe's
    candidates differ by 10 to 30 %.
    """
    best_layout = max(layouts.values(), key=BATCH_LAYOUTS.index)
    allowing = [setup for setup in setups if layouts[setup.label] == best_layout]
    return min(allowing, key=lambda setup: seconds[setup.label])


def _probe(
    base_model_dir: Path, device: str, adapter: AdapterShape, setups: list[TrainingSetup]
) -> tuple[dict[str, float], dict[str, BatchLayout]]:
    """Each candidate's median probe seconds and the batch layout it allows (loss.py)."""
    timers = {setup.label: _probe_pass(base_model_dir, device, adapter, setup) for setup in setups}
    layouts = {setup.label: _layout_allowed(base_model_dir, device, setup) for setup in setups}
    seconds: dict[str, list[float]] = {label: [] for label in timers}
    # Passes alternate between the candidates, so that a busy moment slows them alike.
    for _ in range(PROBE_PASSES):
        for label, timed_pass in timers.items():
            seconds[label].append(timed_pass())
    return {label: statistics.median(values) for label, values in seconds.items()}, layouts


def _probe_pass(
    base_model_dir: Path, device: str, adapter: AdapterShape, setup: TrainingSetup
) -> Callable[[], float]:
    """A timed forward and backward pass through the model's first PROBE_LAYERS layers with
    the job's LoRA adapter on them, as a training step makes it; warmed up once."""
    # Loading a few of the layers leaves the others' weights unused, which is the point.
    base = _load_quietly(base_model_dir, device, setup, num_hidden_layers=PROBE_LAYERS)
    lora = LoraConfig(
        r=adapter.rank, target_modules=list(adapter.target_modules), task_type="CAUSAL_LM"
    )
    model = get_peft_model(base, lora)
    decoder = base.get_decoder()
    hidden_size = int(base.config.hidden_size)
    generator = torch.Generator(device=device).manual_seed(0)

    def timed_batch(rows: int, width: int, examples: int) -> float:
        positions = torch.arange(width // examples, device=device).repeat(rows, examples)
        inputs = torch.randn(rows, width, hidden_size, generator=generator, device=device)
        inputs = inputs.to(setup.dtype)
        _synchronize(device)
        began = time.perf_counter()
        hidden = decoder(inputs_embeds=inputs, position_ids=positions, use_cache=False)
        hidden.last_hidden_state.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        _synchronize(device)
        return time.perf_counter() - began

    def timed_pass() -> float:
        return sum(timed_batch(*batch) for batch in PROBE_BATCHES)

    timed_pass()
    return timed_pass


def _layout_allowed(base_model_dir: Path, device: str, setup: TrainingSetup) -> BatchLayout:
    """The batch layout (loss.py) the whole model allows in this setup. Whole, not the probe's
    few layers: where a kernel rounds masked rows a little differently, the difference grows
    with depth (torch's fused CPU attention in bf16 was within tolerance after 4 of SmolLM2's
    layers and a quarter of the logits' scale off after all 30)."""
    model = _load_quietly(base_model_dir, device, setup)
    # Frozen, as under LoRA: the checks read the frozen weights' dtype.
    model.requires_grad_(False)
    return batch_layout(model, device)


def _load_quietly(
    base_model_dir: Path, device: str, setup: TrainingSetup, **config: Any
) -> PreTrainedModel:
    """The base model in this setup on the device, config overriding its configuration."""
    with _quiet_loading():
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            base_model_dir,
            dtype=setup.dtype,
            attn_implementation=setup.attention,
            local_files_only=True,
            **config,
        )
    model.to(device)  # type: ignore[arg-type]
    return model


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' progress bar and its report of unused weights, off for the probe's loads."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def given_choice(setup: TrainingSetup, device: str) -> HostChoice:
    """A setup its caller chose, unmeasured but for the peak that MFU is measured against."""
    return HostChoice(setup, {}, peak_matrix_flops(setup.precision, device), "set by its caller")


@functools.cache
def peak_matrix_flops(precision: Precision, device: str) -> float:
    """The best rate of a large square matrix product in this precision, in FLOP/s, by
    torch's `linear`, the product the model's layers call. Not `matmul`: without bf16 matrix
    units its bf16 fallback ran at 0.3 GFLOP/s against `linear`'s 19, which put a bf16 job's
    utilisation at 10 times the "peak"."""
    dtype = precision_dtype(precision)
    size = PEAK_MATRIX_SIZE
    inputs = torch.randn(size, size, device=device).to(dtype)
    weight = torch.randn(size, size, device=device).to(dtype)
    torch.nn.functional.linear(inputs, weight)
    best = float("inf")
    for _ in range(4):
        _synchronize(device)
        began = time.perf_counter()
        torch.nn.functional.linear(inputs, weight)
        _synchronize(device)
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best
