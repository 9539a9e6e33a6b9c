"""Reads for training: curves as chart coordinates, the overfitting signal, checkpoints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings

from .models import Checkpoint, TrainingJob

CHART_WIDTH = 640
CHART_HEIGHT = 220
CHART_PADDING = 30
# "Several evaluations": validation loss rising this many times in a row.
OVERFITTING_RISES = 3

Point = tuple[float, float]
MetricRow = tuple[int, float | None, float | None]  # step, train loss, validation loss


@dataclass(frozen=True)
class LossChart:
    train: list[Point]
    val: list[Point]
    low: float
    high: float
    max_step: int
    latest_train: float | None
    latest_val: float | None

    @property
    def is_empty(self) -> bool:
        return not self.train and not self.val

    @property
    def train_points(self) -> str:
        return _polyline(self.train)

    @property
    def val_points(self) -> str:
        return _polyline(self.val)


@dataclass(frozen=True)
class SeriesChart:
    """One metric by step (learning rate, tokens per second)."""

    points: list[Point]
    low: float
    high: float
    max_step: int
    latest: float | None

    @property
    def is_empty(self) -> bool:
        return not self.points

    @property
    def polyline(self) -> str:
        return _polyline(self.points)


def _polyline(points: list[Point]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _scale(
    series: Sequence[tuple[int, float]], max_step: int, low: float, high: float
) -> list[Point]:
    """Chart coordinates; SVG's y grows downward, so higher values sit higher on the chart."""
    inner_w = CHART_WIDTH - 2 * CHART_PADDING
    inner_h = CHART_HEIGHT - 2 * CHART_PADDING
    span = high - low
    return [
        (
            CHART_PADDING + inner_w * step / max(max_step, 1),
            CHART_PADDING + inner_h * (high - value) / span,
        )
        for step, value in series
    ]


def _axis(values: Sequence[float], *, floor: float | None = 0.0) -> tuple[float, float]:
    # Fit the axis to the values seen, so that a drop from 2.3 to 2.1 is visible, with a margin
    # so a single point or a flat line does not sit on the frame.
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    # The margin scales with the values, so a flat learning rate of 1e-4 is not squashed.
    margin = max((high - low) * 0.1, max(abs(low), abs(high)) * 0.02, 1e-12)
    low = low - margin if floor is None else max(low - margin, floor)
    return low, high + margin


def _max_step(job: TrainingJob, steps: Sequence[int]) -> int:
    return max(job.total_steps, max(steps, default=0))


def loss_chart(job: TrainingJob) -> LossChart:
    rows = list(job.metrics.values_list("step", "train_loss", "val_loss"))
    train = [(step, t) for step, t, _ in rows if t is not None]
    val = [(step, v) for step, _, v in rows if v is not None]
    low, high = _axis([loss for _, loss in train + val])
    max_step = _max_step(job, [s for s, _, _ in rows])
    return LossChart(
        train=_scale(train, max_step, low, high),
        val=_scale(val, max_step, low, high),
        low=low,
        high=high,
        max_step=max_step,
        latest_train=train[-1][1] if train else None,
        latest_val=val[-1][1] if val else None,
    )


def series_chart(job: TrainingJob, field: str) -> SeriesChart:
    """``field`` is a TrainingMetric column: learning_rate or tokens_per_second."""
    rows = [
        (step, value) for step, value in job.metrics.values_list("step", field) if value is not None
    ]
    low, high = _axis([value for _, value in rows])
    max_step = _max_step(job, [step for step, _ in rows])
    return SeriesChart(
        points=_scale(rows, max_step, low, high),
        low=low,
        high=high,
        max_step=max_step,
        latest=rows[-1][1] if rows else None,
    )


@dataclass(frozen=True)
class OverfittingSignal:
    since_step: int
    best_step: int
    best_val_loss: float
    latest_val_loss: float

    @property
    def message(self) -> str:
        return (
            f"Validation loss has risen for {OVERFITTING_RISES} evaluations in a row since step "
            f"{self.since_step} ({self.best_val_loss:.4f} at step {self.best_step}, now "
            f"{self.latest_val_loss:.4f}) while training loss kept falling: the model is "
            "memorising the training set. Prefer the checkpoint with the best validation loss, "
            "fewer epochs, or more data."
        )


def overfitting_signal(
    rows: Sequence[MetricRow], *, rises: int = OVERFITTING_RISES
) -> OverfittingSignal | None:
    """Validation loss up at each of the last ``rises`` evaluations while the mean training
    loss between them went down; None when the curves do not show that."""
    evaluations = [(step, val) for step, _, val in rows if val is not None]
    if len(evaluations) < rises + 1:
        return None
    window = evaluations[-(rises + 1) :]
    if not all(
        later > earlier for (_, earlier), (_, later) in zip(window, window[1:], strict=False)
    ):
        return None
    start, end = window[0][0], window[-1][0]
    before = [t for step, t, _ in rows if t is not None and step <= start]
    during = [t for step, t, _ in rows if t is not None and start < step <= end]
    if not before or not during:
        return None
    # Compare the latest stretch with the stretch just before the rise, averaged: single
    # batch losses are noisy.
    recent_before = before[-max(len(during), 1) :]
    if statistics.fmean(during) >= statistics.fmean(recent_before):
        return None
    best_step, best_val = min(evaluations, key=lambda point: point[1])
    return OverfittingSignal(
        since_step=start,
        best_step=best_step,
        best_val_loss=best_val,
        latest_val_loss=window[-1][1],
    )


def job_overfitting(job: TrainingJob) -> OverfittingSignal | None:
    return overfitting_signal(list(job.metrics.values_list("step", "train_loss", "val_loss")))


def artifact_name(path: str) -> str:
    """A stored adapter as people may see it: its path inside the artifact store, never where
    that lies on the server's disk; a path outside the store shows its own name only."""
    if not path:
        return ""
    stored = PurePath(path)
    try:
        return str(stored.relative_to(settings.FTPORTAL_ARTIFACTS_DIR))
    except ValueError:
        return stored.name


@dataclass(frozen=True)
class CheckpointRow:
    checkpoint: Checkpoint
    is_best: bool
    model_version_id: int | None

    @property
    def artifact(self) -> str:
        return artifact_name(self.checkpoint.path)


def checkpoint_rows(job: TrainingJob) -> list[CheckpointRow]:
    """The job's checkpoints, the best by validation loss marked (else the job's best step)."""
    checkpoints = list(job.checkpoints.select_related("model_version"))
    measured = [c for c in checkpoints if c.val_loss is not None]
    best: Checkpoint | None
    if measured:
        best = min(measured, key=lambda c: (c.val_loss, c.step))
    else:
        best = next((c for c in checkpoints if c.step == job.best_step), None)
    return [
        CheckpointRow(
            checkpoint=c,
            is_best=c is best,
            model_version_id=getattr(getattr(c, "model_version", None), "pk", None),
        )
        for c in checkpoints
    ]
