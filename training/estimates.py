"""Before launch: how many tokens a job trains on, what it costs, how long a local job takes,
and the guide's warnings (too little data, no validation split, too many epochs, a base model
near its end).

A local job's time is its parts (``providers.base.LocalCosts``): the optimizer steps over its
training tokens, its validation passes (forward only, over the validation split, as many as its
interval makes), its checkpoint saves and loading the model. Each part's cost is the median of
what the last finished jobs of the same base model measured on the machines that serve the
training queue (``JobSpeeds``, recorded by the runner as a job event), else a first guess; the
range comes from those jobs' spread, or a documented factor with one job or none.
"""

from __future__ import annotations

import datetime
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from catalog.lifecycle import LifecycleEventKind, base_model_lifecycle_events
from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion, Split
from datasets.quality.services import counter_or_estimate, version_tokens_per_epoch
from datasets.quality.stats import INSUFFICIENT_BELOW, TOKENS_PER_EPOCH_MEANS
from datasets.quality.tokens import TokenCounter, count_conversations, shared_start_tokens
from ftportal.selectors import queue_for_task, queue_machines
from providers.base import (
    CHECKPOINT_SHARE,
    MEASURED_CPU_COSTS,
    VALIDATION_SHARE,
    LocalCosts,
    StepPlan,
    TrainingConfig,
    default_intervals,
    step_plan,
)
from providers.batching import computed_tokens, epoch_batch_order, length_sorted_batches

from .hyperparameters import HOSTED_PROVIDERS, early_stopping_text, training_config_from
from .models import JobEvent, JobStatus, TrainingJob

# The guide: "3 to 5 epochs".
GUIDE_MAX_EPOCHS = 5
# Warn this long before a base model stops taking jobs or shuts down.
END_OF_LIFE_WARNING_DAYS = 60
# Local jobs whose measured speed informs the time estimate.
SPEED_SAMPLE_JOBS = 5
MILLION = Decimal(1_000_000)
# The task that runs local jobs: the machines serving its queue are those whose speeds count.
LOCAL_TRAINING_TASK = "training.tasks.run_training_job"
# The job event in which the runner records what a finished local job measured: one per job
# (a provider event id is unique per job), found without reading any other event.
SPEEDS_EVENT_ID = "local-speeds"
# The hyperparameters default_intervals chooses when the lead leaves them unset.
INTERVAL_FIELDS = ("eval_every_steps", "checkpoint_every_steps")
# The range of a local time estimate, as factors of the estimate. With no job measured on the
# machine, the speed is FTPORTAL_LOCAL_TOKENS_PER_SECOND, a guess for hardware nobody has
# timed: a factor of 2 either way. With measured jobs, at least MEASURED_RANGE, widened to the
# estimates each measured job's own speeds would give: bench/estimate.py's actual / estimated
# seconds were 1.05 and 0.94 on the shared 2-core machine (the old estimate's 2.15 and 1.21).
GUESSED_RANGE = (0.5, 2.0)
MEASURED_RANGE = (0.8, 1.25)


@dataclass(frozen=True)
class LaunchWarning:
    code: str
    message: str


@dataclass(frozen=True)
class TimeEstimate:
    """How long a local job takes on the machines of the training queue: the point estimate,
    its range, its parts and what they rest on."""

    seconds: float
    low_seconds: float
    high_seconds: float
    training_seconds: float
    validation_seconds: float
    checkpoint_seconds: float
    load_seconds: float
    validation_passes: int
    checkpoint_saves: int  # the job's checkpoints and its final adapter
    basis: str  # the speeds, in words
    measured: bool  # from finished jobs on the queue's machines, not the first guess

    @property
    def speed_source(self) -> str:
        return "measured" if self.measured else "first_guess"

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "low_seconds": self.low_seconds,
            "high_seconds": self.high_seconds,
            "parts": {
                "training_seconds": self.training_seconds,
                "validation_seconds": self.validation_seconds,
                "checkpoint_seconds": self.checkpoint_seconds,
                "load_seconds": self.load_seconds,
            },
            "validation_passes": self.validation_passes,
            "checkpoint_saves": self.checkpoint_saves,
            "basis": self.basis,
            "speed_source": self.speed_source,
        }


@dataclass(frozen=True)
class LaunchEstimate:
    train_examples: int
    validation_examples: int
    tokens_per_epoch: int
    epochs: int
    training_tokens: int
    cost_usd: Decimal | None
    cost_basis: str
    seconds: float | None = None
    seconds_basis: str = ""
    truncated_examples: int = 0
    warnings: list[LaunchWarning] = field(default_factory=list)
    # Local jobs: optimizer steps, and whether max_steps ends the job before its epochs do.
    steps: int | None = None
    capped_by_max_steps: bool = False
    early_stopping: str = ""  # early_stopping_text; "" where the provider has none
    tokens_per_epoch_means: str = TOKENS_PER_EPOCH_MEANS
    # Local jobs: the parts of the time estimate, and the validation and checkpoint intervals
    # it counts with, which the launch stores on the job; whether the lead left them unset.
    time: TimeEstimate | None = None
    intervals: dict[str, int] = field(default_factory=dict)
    intervals_scaled: bool = False

    @property
    def intervals_rule(self) -> str:
        """How default_intervals scaled the intervals the lead left unset, in words; "" when
        the lead set both (or the job is hosted)."""
        if not self.intervals_scaled:
            return ""
        return (
            f"scaled to the data: validation at most {VALIDATION_SHARE:.0%} of the training "
            f"time, checkpoint saves at most {CHECKPOINT_SHARE:.0%}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_examples": self.train_examples,
            "validation_examples": self.validation_examples,
            "tokens_per_epoch": self.tokens_per_epoch,
            "tokens_per_epoch_means": self.tokens_per_epoch_means,
            "epochs": self.epochs,
            "training_tokens": self.training_tokens,
            "cost_usd": str(self.cost_usd) if self.cost_usd is not None else None,
            "cost_basis": self.cost_basis,
            "seconds": self.seconds,
            "seconds_basis": self.seconds_basis,
            "truncated_examples": self.truncated_examples,
            "steps": self.steps,
            "capped_by_max_steps": self.capped_by_max_steps,
            "early_stopping": self.early_stopping,
            "time": self.time.as_dict() if self.time is not None else None,
            "intervals": self.intervals,
            "intervals_scaled": self.intervals_scaled,
            "intervals_rule": self.intervals_rule,
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
        }


# The launch warning of each end of a base model (``catalog.lifecycle``, which words them);
# all but the end of fine-tuned inference also refuse a new job once passed.
END_OF_LIFE_CODES = {
    LifecycleEventKind.RETIRES: "base_model_retiring",
    LifecycleEventKind.INFERENCE_ENDS: "fine_tuned_inference_ending",
    LifecycleEventKind.DEPRECATED: "base_model_deprecating",
    LifecycleEventKind.FINE_TUNING_ENDS: "fine_tuning_ending",
}


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:] + "."


def end_of_life_problem(base_model: BaseModel, today: datetime.date) -> str:
    """Why no job may start on this model any more, or ""."""
    for event in base_model_lifecycle_events(base_model, today=today):
        if event.passed and event.kind != LifecycleEventKind.INFERENCE_ENDS:
            return _sentence(event.words)
    return ""


def end_of_life_warnings(base_model: BaseModel, today: datetime.date) -> list[LaunchWarning]:
    """The ends of the model within END_OF_LIFE_WARNING_DAYS, soonest first."""
    return [
        LaunchWarning(END_OF_LIFE_CODES[event.kind], _sentence(event.words))
        for event in base_model_lifecycle_events(base_model, today=today)
        if 0 < event.days_left <= END_OF_LIFE_WARNING_DAYS
    ]


def data_warnings(*, examples: int, validation: int, epochs: int) -> list[LaunchWarning]:
    warnings = []
    if examples < INSUFFICIENT_BELOW:
        warnings.append(
            LaunchWarning(
                "insufficient_data",
                f"{examples} examples: the guide calls fewer than {INSUFFICIENT_BELOW} "
                "insufficient data; 100 to 500 good examples is the recommended start.",
            )
        )
    if validation == 0:
        warnings.append(
            LaunchWarning(
                "no_validation_split",
                "No validation split: validation loss, overfitting warnings and early stopping "
                "need one (the guide: hold out 10 to 20 %).",
            )
        )
    if epochs > GUIDE_MAX_EPOCHS or (epochs > 3 and examples < INSUFFICIENT_BELOW):
        warnings.append(
            LaunchWarning(
                "many_epochs",
                f"{epochs} epochs on {examples} examples: the guide suggests 3 to 5; more "
                "passes over little data tend to memorise it (watch validation loss).",
            )
        )
    return warnings


@dataclass(frozen=True)
class JobSpeeds:
    """What one finished local job measured on its worker; None where it did none of it."""

    training_tokens_per_second: float
    validation_tokens_per_second: float | None = None
    validation_passes: int = 0
    save_seconds: float | None = None  # a checkpoint save's mean
    saves: int = 0
    load_seconds: float | None = None
    # Whether the worker's batches shared their examples' common start (None: not recorded,
    # before issue 19), and the share of the tokens its model then ran, training and validation.
    shares_prefix: bool | None = None
    training_computed_share: float = 1.0
    validation_computed_share: float = 1.0

    @staticmethod
    def from_metrics(metrics: dict[str, float]) -> JobSpeeds:
        """From a local TrainingResult's metrics."""
        passes = int(metrics.get("validation_passes", 0))
        validation_seconds = metrics.get("validation_seconds", 0.0)
        saves = int(metrics.get("checkpoint_saves", 0))
        trained = metrics.get("trained_tokens", 0.0)
        validation_tokens = metrics.get("validation_tokens", 0.0)
        shares = metrics.get("shares_prefix")
        return JobSpeeds(
            training_tokens_per_second=metrics.get("tokens_per_second", 0.0),
            validation_tokens_per_second=(
                metrics.get("validation_tokens", 0.0) * passes / validation_seconds
                if passes and validation_seconds > 0
                else None
            ),
            validation_passes=passes,
            save_seconds=metrics.get("checkpoint_seconds", 0.0) / saves if saves else None,
            saves=saves,
            load_seconds=metrics.get("load_seconds"),
            shares_prefix=None if shares is None else bool(shares),
            training_computed_share=(
                metrics.get("computed_tokens", trained) / trained if trained else 1.0
            ),
            validation_computed_share=(
                metrics.get("validation_computed_tokens", validation_tokens) / validation_tokens
                if validation_tokens
                else 1.0
            ),
        )

    def text(self) -> str:
        """The job event's words; ``from_text`` reads them back."""
        parts = [f"Measured speeds: training {self.training_tokens_per_second:.1f} tokens/s"]
        if self.validation_tokens_per_second is not None:
            parts.append(
                f"validation {self.validation_tokens_per_second:.1f} tokens/s "
                f"({self.validation_passes} passes)"
            )
        if self.save_seconds is not None:
            parts.append(f"checkpoint saves {self.save_seconds:.3f} s each ({self.saves})")
        if self.load_seconds is not None:
            parts.append(f"loading {self.load_seconds:.2f} s")
        if self.shares_prefix is False:
            parts.append("batches not sharing their start")
        elif self.shares_prefix:
            parts.append(
                f"batches sharing their start ran {self.training_computed_share:.3f} of the "
                f"training tokens and {self.validation_computed_share:.3f} of the validation tokens"
            )
        return "; ".join(parts)

    @staticmethod
    def from_text(text: str) -> JobSpeeds | None:
        training = _SPEED_PATTERNS["training"].search(text)
        if training is None:
            return None
        validation = _SPEED_PATTERNS["validation"].search(text)
        save = _SPEED_PATTERNS["save"].search(text)
        load = _SPEED_PATTERNS["load"].search(text)
        sharing = _SPEED_PATTERNS["sharing"].search(text)
        shares: bool | None = True if sharing else None
        if _SPEED_PATTERNS["not sharing"].search(text):
            shares = False
        return JobSpeeds(
            training_tokens_per_second=float(training[1]),
            validation_tokens_per_second=float(validation[1]) if validation else None,
            validation_passes=int(validation[2]) if validation else 0,
            save_seconds=float(save[1]) if save else None,
            saves=int(save[2]) if save else 0,
            load_seconds=float(load[1]) if load else None,
            shares_prefix=shares,
            training_computed_share=float(sharing[1]) if sharing else 1.0,
            validation_computed_share=float(sharing[2]) if sharing else 1.0,
        )

    def training_token_seconds(self) -> float:
        """Seconds per token the model ran through an optimizer step."""
        return 1 / (self.training_tokens_per_second * self.training_computed_share)

    def validation_token_seconds(self) -> float | None:
        """Seconds per token the model ran in a validation pass; None where none ran."""
        if not self.validation_tokens_per_second:
            return None
        return 1 / (self.validation_tokens_per_second * self.validation_computed_share)


_NUMBER = r"(\d+(?:\.\d+)?)"
_SPEED_PATTERNS = {
    "training": re.compile(rf"training {_NUMBER} tokens/s"),
    "validation": re.compile(rf"validation {_NUMBER} tokens/s \((\d+) passes\)"),
    "save": re.compile(rf"checkpoint saves {_NUMBER} s each \((\d+)\)"),
    "load": re.compile(rf"loading {_NUMBER} s"),
    "sharing": re.compile(
        rf"batches sharing their start ran {_NUMBER} of the training tokens and {_NUMBER} of "
        "the validation tokens"
    ),
    "not sharing": re.compile("batches not sharing their start"),
}


@dataclass(frozen=True)
class CostBasis:
    """The costs a local estimate counts with: ``costs`` the medians, ``samples`` each
    measured job's own (none when guessed), and what they rest on, in words.

    Where the latest measured job's worker laid its batches out sharing their examples' common
    start (``shares_prefix``), the token costs are per token its model ran, and ``for_data``
    turns them into costs per token of a given dataset."""

    costs: LocalCosts
    samples: list[LocalCosts]
    text: str
    shares_prefix: bool = False

    @property
    def measured(self) -> bool:
        return bool(self.samples)

    def for_data(self, shares: ComputedShares) -> CostBasis:
        """The costs per token of data whose batches run ``shares`` of their tokens."""

        def scaled(costs: LocalCosts) -> LocalCosts:
            return replace(
                costs,
                training_token_seconds=costs.training_token_seconds * shares.training,
                validation_token_seconds=costs.validation_token_seconds * shares.validation,
            )

        return CostBasis(
            scaled(self.costs),
            [scaled(costs) for costs in self.samples],
            f"{self.text}; this version's batches share their start, so the model runs "
            f"{shares.training:.0%} of its training tokens and {shares.validation:.0%} of its "
            "validation tokens",
            self.shares_prefix,
        )


@dataclass(frozen=True)
class ComputedShares:
    """The share of a dataset's tokens the model runs, training and validation, where its
    batches run their examples' common start once (providers.batching)."""

    training: float
    validation: float


def _median_or(values: list[float], default: float) -> float:
    return statistics.median(values) if values else default


def local_cost_basis(base_model: BaseModel) -> CostBasis:
    """The median costs of the last finished local jobs of ``base_model`` on the machines that
    serve the training queue (validation, saves and loading where those jobs recorded them,
    else the measured constants), else FTPORTAL_LOCAL_TOKENS_PER_SECOND as a first guess."""
    machines = queue_machines(queue_for_task(LOCAL_TRAINING_TASK))
    on_machines = Q(pk__in=[])
    for machine in machines:
        on_machines |= Q(worker__startswith=f"{machine}:")
    finished = (
        TrainingJob.objects.filter(
            on_machines,
            base_model=base_model,
            provider=Provider.LOCAL,
            status=JobStatus.SUCCEEDED,
            tokens_per_second__gt=0,
        )
        .order_by("-finished_at")
        .values_list("pk", "tokens_per_second")[:SPEED_SAMPLE_JOBS]
    )
    rows = [(pk, float(speed)) for pk, speed in finished if speed]
    if not rows:
        guess = 1 / float(settings.FTPORTAL_LOCAL_TOKENS_PER_SECOND)
        ratio = MEASURED_CPU_COSTS.validation_cost_ratio
        costs = LocalCosts(
            training_token_seconds=guess,
            validation_token_seconds=guess * ratio,
            save_seconds=MEASURED_CPU_COSTS.save_seconds,
            load_seconds=MEASURED_CPU_COSTS.load_seconds,
        )
        where = ", ".join(machines) or "no machine yet"
        return CostBasis(
            costs,
            [],
            f"{1 / guess:,.0f} tokens/s from FTPORTAL_LOCAL_TOKENS_PER_SECOND, a first guess: "
            f"no finished job of this model on the training queue's machines ({where})",
        )
    recorded = dict(
        JobEvent.objects.filter(
            job_id__in=[pk for pk, _ in rows], provider_event_id=SPEEDS_EVENT_ID
        ).values_list("job_id", "message")
    )
    # Jobs that recorded no speeds (before the runner did) measured training alone.
    measured = [
        JobSpeeds.from_text(recorded.get(pk, "")) or JobSpeeds(tokens_per_second)
        for pk, tokens_per_second in rows
    ]
    ratios = [
        validation / speeds.training_token_seconds()
        for speeds in measured
        if (validation := speeds.validation_token_seconds()) is not None
    ]
    ratio = _median_or(ratios, MEASURED_CPU_COSTS.validation_cost_ratio)
    save = _median_or(
        [s.save_seconds for s in measured if s.save_seconds is not None],
        MEASURED_CPU_COSTS.save_seconds,
    )
    load = _median_or(
        [s.load_seconds for s in measured if s.load_seconds is not None],
        MEASURED_CPU_COSTS.load_seconds,
    )

    def costs_of(speeds: JobSpeeds) -> LocalCosts:
        training = speeds.training_token_seconds()
        validation = speeds.validation_token_seconds()
        return LocalCosts(
            training_token_seconds=training,
            validation_token_seconds=training * ratio if validation is None else validation,
            save_seconds=speeds.save_seconds or save,
            load_seconds=speeds.load_seconds or load,
        )

    samples = [costs_of(speeds) for speeds in measured]
    training = statistics.median(costs.training_token_seconds for costs in samples)
    # The latest job that recorded its layout tells how this machine lays batches out.
    shares_prefix = next((s.shares_prefix for s in measured if s.shares_prefix is not None), False)
    parts = "validation, saves and loading measured" if ratios else "validation estimated"
    run = " run by the model (a shared start counted once a batch)" if shares_prefix else ""
    return CostBasis(
        LocalCosts(training, training * ratio, save, load),
        samples,
        f"{1 / training:,.0f} tokens/s{run} measured: the median of the last {len(rows)} jobs "
        f"of this model on {', '.join(machines)} ({parts})",
        shares_prefix,
    )


def computed_shares(
    *,
    train: Sequence[object],
    validation: Sequence[object],
    counter: TokenCounter,
    config: TrainingConfig,
) -> ComputedShares:
    """The share of the training and validation tokens the model runs when batches share
    their examples' common start: the trainer's own batches (its first epoch's order, and the
    validation pass's) laid out by providers.batching, on the counted tokens."""
    # Batches mostly share one system prompt: each distinct start is counted once.
    counted_starts: dict[str, int] = {}

    def share(
        conversations: Sequence[object], batches: Callable[[list[int]], list[list[int]]]
    ) -> float:
        counts = count_conversations(list(conversations), counter).total
        lengths = [min(int(total), config.max_seq_len) for total in counts]
        ran = 0
        for indices in batches(lengths):
            batch_lengths = [lengths[i] for i in indices]
            start = shared_start_tokens(
                [conversations[i] for i in indices], counter, counted=counted_starts
            )
            prefix = min(start, min(batch_lengths) - 1)
            ran += computed_tokens(prefix, batch_lengths)
        total = sum(lengths)
        return ran / total if total else 1.0

    return ComputedShares(
        training=share(
            train, lambda lengths: epoch_batch_order(lengths, config.batch_size, config.seed, 0)
        ),
        validation=share(
            validation, lambda lengths: length_sorted_batches(lengths, config.batch_size)
        ),
    )


def job_seconds(
    costs: LocalCosts,
    *,
    training_tokens: int,
    validation_tokens: int,
    validation_passes: int,
    saves: int,
) -> tuple[float, float, float, float]:
    """(training, validation, checkpoint, loading) seconds of a local job at ``costs``."""
    return (
        training_tokens * costs.training_token_seconds,
        validation_passes * validation_tokens * costs.validation_token_seconds,
        saves * costs.save_seconds,
        costs.load_seconds,
    )


def local_time_estimate(
    basis: CostBasis,
    *,
    plan: StepPlan,
    config: TrainingConfig,
    training_tokens: int,
    validation_tokens: int,
) -> TimeEstimate:
    """The time of a local job whose intervals are set (``default_intervals``), with its
    range: every validation pass and checkpoint of the whole plan (early stopping may end it
    sooner), and the final adapter's save."""
    eval_every = config.eval_every_steps or plan.total_steps or 1
    passes = plan.evaluations_after(0, eval_every) if validation_tokens else 0
    saves = plan.checkpoints(config.checkpoint_every_steps or 0) + 1

    def seconds_at(costs: LocalCosts) -> tuple[float, float, float, float]:
        return job_seconds(
            costs,
            training_tokens=training_tokens,
            validation_tokens=validation_tokens,
            validation_passes=passes,
            saves=saves,
        )

    parts = seconds_at(basis.costs)
    total = sum(parts)
    low_factor, high_factor = MEASURED_RANGE if basis.measured else GUESSED_RANGE
    each_job = [sum(seconds_at(costs)) for costs in basis.samples]
    return TimeEstimate(
        seconds=total,
        low_seconds=min([total * low_factor, *each_job]),
        high_seconds=max([total * high_factor, *each_job]),
        training_seconds=parts[0],
        validation_seconds=parts[1],
        checkpoint_seconds=parts[2],
        load_seconds=parts[3],
        validation_passes=passes,
        checkpoint_saves=saves,
        basis=basis.text,
        measured=basis.measured,
    )


def local_cost(seconds: float) -> tuple[Decimal, str]:
    rate = Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR))
    hours = Decimal(str(seconds)) / Decimal(3600)
    return (hours * rate).quantize(Decimal("0.0001")), f"{hours:.3f} h x ${rate}/h"


def hosted_cost(base_model: BaseModel, trained_tokens: int) -> tuple[Decimal | None, str]:
    price = base_model.training_usd_per_million_tokens
    if price is None:
        return None, "no training price in the catalog"
    cost = (Decimal(trained_tokens) * price / MILLION).quantize(Decimal("0.0001"))
    return cost, f"{trained_tokens:,} trained tokens x ${price}/M"


def launch_estimate(
    *, version: DatasetVersion, base_model: BaseModel, hyperparameters: dict[str, Any]
) -> LaunchEstimate:
    epochs = int(hyperparameters.get("epochs", 3))
    train = list(version.items.filter(split=Split.TRAIN).values_list("messages", flat=True))
    validation_count = version.items.filter(split=Split.VALIDATION).count()
    counter, _ = counter_or_estimate(base_model)
    tokens_per_epoch = version_tokens_per_epoch(version=version, counter=counter)
    max_seq_len = hyperparameters.get("max_seq_len")
    truncated = 0
    if max_seq_len:
        totals = count_conversations(train, counter).total
        truncated = int((totals > max_seq_len).sum())
    steps: int | None = None
    capped_by_max_steps = False
    training_tokens = tokens_per_epoch * epochs
    local = base_model.provider not in HOSTED_PROVIDERS
    config = training_config_from(hyperparameters) if local else None
    plan = step_plan(len(train), config) if config is not None else None
    if plan is not None and train:
        steps = plan.total_steps
        if plan.capped:
            # Steps take batches of equal size, so the steps run take their share of the tokens.
            capped_by_max_steps = True
            training_tokens = round(tokens_per_epoch * plan.total_steps / plan.steps_per_epoch)
    warnings = data_warnings(
        examples=version.example_count, validation=validation_count, epochs=epochs
    )
    warnings += end_of_life_warnings(base_model, timezone.localdate())
    if truncated:
        warnings.append(
            LaunchWarning(
                "truncated",
                f"{truncated} training examples are longer than max_seq_len={max_seq_len} "
                "tokens and will be cut off.",
            )
        )
    time: TimeEstimate | None = None
    intervals: dict[str, int] = {}
    if config is None or plan is None:
        cost, cost_basis = hosted_cost(base_model, training_tokens)
    else:
        validation = list(
            version.items.filter(split=Split.VALIDATION).values_list("messages", flat=True)
        )
        validation_tokens = int(count_conversations(validation, counter).total.sum())
        basis = local_cost_basis(base_model)
        if basis.shares_prefix:
            shares = computed_shares(
                train=train, validation=validation, counter=counter, config=config
            )
            basis = basis.for_data(shares)
        config = default_intervals(
            config,
            train_examples=len(train),
            train_tokens_per_epoch=tokens_per_epoch,
            validation_tokens=validation_tokens,
            costs=basis.costs,
        )
        intervals = {
            "eval_every_steps": config.eval_every_steps or 1,
            "checkpoint_every_steps": config.checkpoint_every_steps or 0,
        }
        time = local_time_estimate(
            basis,
            plan=plan,
            config=config,
            training_tokens=training_tokens,
            validation_tokens=validation_tokens,
        )
        cost, cost_basis = local_cost(time.seconds)
    return LaunchEstimate(
        train_examples=len(train),
        validation_examples=validation_count,
        tokens_per_epoch=tokens_per_epoch,
        epochs=epochs,
        training_tokens=training_tokens,
        cost_usd=cost,
        cost_basis=cost_basis,
        seconds=time.seconds if time is not None else None,
        seconds_basis=time.basis if time is not None else "",
        truncated_examples=truncated,
        warnings=warnings,
        steps=steps,
        capped_by_max_steps=capped_by_max_steps,
        early_stopping=(
            ""
            if base_model.provider in HOSTED_PROVIDERS
            else early_stopping_text(hyperparameters.get("early_stopping_patience"))
        ),
        time=time,
        intervals=intervals,
        intervals_scaled=local
        and any(hyperparameters.get(name) is None for name in INTERVAL_FIELDS),
    )
