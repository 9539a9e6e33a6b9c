"""Before launch: how many tokens a job trains on, what it costs, how long a local job takes,
and the guide's warnings (too little data, no validation split, too many epochs, a base model
near its end)."""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from catalog.lifecycle import LifecycleEventKind, base_model_lifecycle_events
from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion, Split
from datasets.quality.services import counter_or_estimate, version_tokens_per_epoch
from datasets.quality.stats import INSUFFICIENT_BELOW, TOKENS_PER_EPOCH_MEANS
from datasets.quality.tokens import count_conversations
from providers.base import step_plan

from .hyperparameters import HOSTED_PROVIDERS, early_stopping_text, training_config_from
from .models import JobStatus, TrainingJob

# The guide: "3 to 5 epochs".
GUIDE_MAX_EPOCHS = 5
# Warn this long before a base model stops taking jobs or shuts down.
END_OF_LIFE_WARNING_DAYS = 60
# Local jobs whose measured speed informs the time estimate.
SPEED_SAMPLE_JOBS = 5
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class LaunchWarning:
    code: str
    message: str


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


def local_tokens_per_second(base_model: BaseModel) -> tuple[float, str]:
    """Median speed of the latest finished local jobs on this base model, on this hardware."""
    measured = list(
        TrainingJob.objects.filter(
            base_model=base_model,
            provider=Provider.LOCAL,
            status=JobStatus.SUCCEEDED,
            tokens_per_second__gt=0,
            tokens_per_second__isnull=False,
        )
        .order_by("-finished_at")
        .values_list("tokens_per_second", flat=True)[:SPEED_SAMPLE_JOBS]
    )
    speeds = [speed for speed in measured if speed is not None]
    if speeds:
        return statistics.median(speeds), f"median speed of the last {len(speeds)} local jobs"
    default = float(settings.FTPORTAL_LOCAL_TOKENS_PER_SECOND)
    return default, "FTPORTAL_LOCAL_TOKENS_PER_SECOND (no finished local job yet)"


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
    if base_model.provider not in HOSTED_PROVIDERS and train:
        plan = step_plan(len(train), training_config_from(hyperparameters))
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
    seconds: float | None = None
    seconds_basis = ""
    if base_model.provider in HOSTED_PROVIDERS:
        cost, cost_basis = hosted_cost(base_model, training_tokens)
    else:
        speed, speed_basis = local_tokens_per_second(base_model)
        seconds = training_tokens / speed
        seconds_basis = f"{speed:,.0f} tokens/s: {speed_basis}"
        cost, cost_basis = local_cost(seconds)
    return LaunchEstimate(
        train_examples=len(train),
        validation_examples=validation_count,
        tokens_per_epoch=tokens_per_epoch,
        epochs=epochs,
        training_tokens=training_tokens,
        cost_usd=cost,
        cost_basis=cost_basis,
        seconds=seconds,
        seconds_basis=seconds_basis,
        truncated_examples=truncated,
        warnings=warnings,
        steps=steps,
        capped_by_max_steps=capped_by_max_steps,
        early_stopping=(
            ""
            if base_model.provider in HOSTED_PROVIDERS
            else early_stopping_text(hyperparameters.get("early_stopping_patience"))
        ),
    )
