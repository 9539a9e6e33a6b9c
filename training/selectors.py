"""Reads for training: a project's jobs and checkpoints, the curves as chart data, the
overfitting signal, checkpoints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftportal.charts import Axis, Chart, Point, Series
from ftportal.models import Project

from .models import Checkpoint, TrainingJob

# "Several evaluations": validation loss rising this many times in a row.
OVERFITTING_RISES = 3
# A loss value is the mean cross-entropy per predicted token, as the trainers report it.
LOSS_AXIS_TITLE = "Loss (cross-entropy per token)"

MetricRow = tuple[int, float | None, float | None]  # step, train loss, validation loss


# --- Project-scoped lookups: the one way pages, the API and forms reach a job or a checkpoint
# by id. ``_in_project`` answers 404 for any id outside the project (another project's
# included, so that ids do not leak); a body reference filters ``_of`` and answers 400. ---


def training_jobs_of(project: Project) -> QuerySet[TrainingJob]:
    """The project's jobs, newest first, with what their pages and the API show of them."""
    return (
        TrainingJob.objects.filter(project=project)
        .select_related("dataset_version__dataset", "base_model", "created_by")
        .prefetch_related("model_versions")
        .order_by("-created_at", "-id")
    )


def training_job_in_project(project: Project, job_id: int) -> TrainingJob:
    return get_object_or_404(training_jobs_of(project), pk=job_id)


def checkpoints_of(project: Project) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(job__project=project).select_related("job")


@dataclass(frozen=True)
class JobCurves:
    """The job page's charts: loss (training and validation), learning rate, speed."""

    loss: Chart
    learning_rate: Chart
    speed: Chart

    @property
    def train_loss(self) -> Series:
        return self.loss.series[0]

    @property
    def val_loss(self) -> Series:
        return self.loss.series[1]


def _step_axis(job: TrainingJob, steps: Sequence[int]) -> Axis:
    # The axis runs to the planned last step, so the chart also shows how far the job is.
    return Axis(
        title="Step", format="integer", min=0, max=max(job.total_steps, max(steps, default=0))
    )


def job_curves(job: TrainingJob) -> JobCurves:
    """Every stored metric point of the job, by step, as chart data."""
    rows = list(
        job.metrics.order_by("step").values_list(
            "step", "train_loss", "val_loss", "learning_rate", "tokens_per_second"
        )
    )
    steps = _step_axis(job, [row[0] for row in rows])

    def points(column: int) -> list[Point]:
        return [(row[0], value) for row in rows if (value := row[column]) is not None]

    return JobCurves(
        loss=Chart(
            element_id="loss-chart-data",
            description="Training and validation loss by step",
            x=steps,
            y=Axis(title=LOSS_AXIS_TITLE),
            series=[Series("Training loss", points(1)), Series("Validation loss", points(2))],
        ),
        learning_rate=Chart(
            element_id="lr-chart-data",
            description="Learning rate by step",
            x=steps,
            y=Axis(title="Learning rate", format="scientific", min=0),
            series=[Series("Learning rate", points(3))],
        ),
        speed=Chart(
            element_id="speed-chart-data",
            description="Training speed in tokens per second by step",
            x=steps,
            y=Axis(title="Tokens per second", format="integer", min=0),
            series=[Series("Tokens per second", points(4))],
        ),
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
