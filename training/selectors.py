"""Reads for training: a project's jobs, searches and checkpoints, the curves as chart data,
the overfitting signal, checkpoints, a search's trials."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftportal.charts import Axis, Chart, Point, Series
from ftportal.models import Project

from .models import Checkpoint, JobStatus, TrainingJob, TrainingMetric, TrainingSearch
from .recipes import job_hyperparameters

# "Several evaluations": validation loss rising this many times in a row.
OVERFITTING_RISES = 3
# A loss value is the mean cross-entropy per predicted token, as the trainers report it.
LOSS_AXIS_TITLE = "Loss (cross-entropy per token)"
ACCURACY_AXIS_TITLE = "Label accuracy (share of validation answers)"

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


def training_searches_of(project: Project) -> QuerySet[TrainingSearch]:
    """The project's searches, newest first, with what their pages and the API show."""
    return (
        TrainingSearch.objects.filter(project=project)
        .select_related("dataset_version__dataset", "base_model", "created_by", "best_job")
        # A list of searches shows each one's trials and best version: two queries in all.
        .prefetch_related("trials", "best_job__model_versions")
        .order_by("-created_at", "-id")
    )


def training_search_in_project(project: Project, search_id: int) -> TrainingSearch:
    return get_object_or_404(training_searches_of(project), pk=search_id)


def checkpoints_of(project: Project) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(job__project=project).select_related("job")


@dataclass(frozen=True)
class JobCurves:
    """The job page's charts: loss (training and validation), learning rate, speed."""

    loss: Chart
    learning_rate: Chart
    speed: Chart
    # Validation label accuracy, for a job whose validation passes measure it.
    accuracy: Chart

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
            "step", "train_loss", "val_loss", "learning_rate", "tokens_per_second", "val_accuracy"
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
        accuracy=Chart(
            element_id="accuracy-chart-data",
            description="Validation label accuracy by step",
            x=steps,
            y=Axis(title=ACCURACY_AXIS_TITLE, format="percent", min=0, max=1),
            series=[Series("Validation label accuracy", points(5))],
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
    """The job's checkpoints, the best marked: by validation label accuracy where the job
    measures it (a lower loss breaking ties, as the trainer keeps its best), else by
    validation loss, else the job's best step."""
    checkpoints = list(job.checkpoints.select_related("model_version"))
    accuracy: dict[int, float] = {
        step: value
        for step, value in job.metrics.values_list("step", "val_accuracy")
        if value is not None
    }
    measured = [c for c in checkpoints if c.val_loss is not None]
    with_accuracy = [c for c in measured if c.step in accuracy]
    best: Checkpoint | None
    if with_accuracy:
        best = min(with_accuracy, key=lambda c: (-accuracy[c.step], c.val_loss, c.step))
    elif measured:
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


# --- searches ------------------------------------------------------------------------------------


def variation_text(variation: dict[str, Any]) -> str:
    """What a trial changes, as the search page says it."""
    if not variation:
        return "the recipe as it is"
    words = {"learning_rate": "learning rate", "lora_r": "LoRA rank", "lora_alpha": "alpha"}
    return ", ".join(f"{words.get(name, name)} {value:g}" for name, value in variation.items())


@dataclass(frozen=True)
class TrialResult:
    """A finished trial's figures at its kept step: what trials are compared on."""

    job: TrainingJob
    val_accuracy: float | None
    val_loss: float | None
    train_loss: float | None

    @property
    def rank_key(self) -> tuple[float, float]:
        """Higher is better: the label accuracy, then the lower loss."""
        accuracy = self.val_accuracy if self.val_accuracy is not None else -1.0
        loss = self.val_loss if self.val_loss is not None else math.inf
        return (accuracy, -loss)


def trial_result(job: TrainingJob) -> TrialResult:
    """The figures of a succeeded trial at the step it kept (its best under early stopping)."""
    step = job.best_step if job.best_step is not None else job.step
    checkpoint = job.checkpoints.filter(step=step).first()
    metric = TrainingMetric.objects.filter(job=job, step=step).first()
    val_loss = checkpoint.val_loss if checkpoint is not None else None
    train_loss = checkpoint.train_loss if checkpoint is not None else None
    if metric is not None:
        val_loss = val_loss if val_loss is not None else metric.val_loss
        train_loss = train_loss if train_loss is not None else metric.train_loss
    return TrialResult(job, job.val_accuracy, val_loss, train_loss)


def best_trial(trials: Sequence[TrainingJob]) -> TrialResult | None:
    """The succeeded trial of the best validation metric; the earlier one on a tie."""
    results = [trial_result(trial) for trial in trials if trial.status == JobStatus.SUCCEEDED]
    if not results:
        return None
    # max keeps the first of equal ones: the earlier trial.
    return max(results, key=lambda result: result.rank_key)


@dataclass(frozen=True)
class TrialRow:
    """One planned trial of a search: what it changes, and its job once it started."""

    number: int
    changes: str
    learning_rate: float
    lora_r: int
    job: TrainingJob | None
    val_accuracy: float | None
    val_loss: float | None
    is_best: bool

    @property
    def minutes(self) -> float | None:
        return self.job.compute_seconds / 60 if self.job is not None else None


def search_trial_rows(search: TrainingSearch) -> list[TrialRow]:
    """Every trial the search planned, in order, started or not."""
    jobs = search_trials(search)
    rows: list[TrialRow] = []
    for index, variation in enumerate(search.trial_settings):
        job = jobs[index] if index < len(jobs) else None
        if job is not None:
            settings_used = job.hyperparameters
        else:
            settings_used = job_hyperparameters(
                search.dataset_version,
                search.base_model,
                dict(search.hyperparameters) | variation,
            )
        succeeded = job is not None and job.status == JobStatus.SUCCEEDED
        result = trial_result(job) if job is not None and succeeded else None
        rows.append(
            TrialRow(
                number=index + 1,
                changes=variation_text(variation),
                learning_rate=float(settings_used["learning_rate"]),
                lora_r=int(settings_used["lora_r"]),
                job=job,
                val_accuracy=result.val_accuracy if result else None,
                val_loss=result.val_loss if result else None,
                is_best=job is not None and job.pk == search.best_job_id,
            )
        )
    return rows


def search_trials(search: TrainingSearch) -> list[TrainingJob]:
    """The search's trials in the order they started (from the prefetched ones when
    training_searches_of fetched the search)."""
    return sorted(search.trials.all(), key=lambda trial: trial.pk)


def search_spent_minutes(search: TrainingSearch) -> float:
    """Worker minutes the search's trials took so far: what its budget is counted against."""
    return sum(trial.compute_seconds for trial in search.trials.all()) / 60


def search_curves(search: TrainingSearch) -> Chart:
    """Each started trial's validation curve on one chart: label accuracy where the trials
    measure it, else the validation loss."""
    jobs = search_trials(search)
    points = {
        job.pk: list(
            job.metrics.filter(val_loss__isnull=False)
            .order_by("step")
            .values_list("step", "val_loss", "val_accuracy")
        )
        for job in jobs
    }
    by_accuracy = any(row[2] is not None for rows in points.values() for row in rows)
    column = 2 if by_accuracy else 1
    series = [
        Series(
            f"Trial {number}",
            [(row[0], value) for row in points[job.pk] if (value := row[column]) is not None],
        )
        for number, job in enumerate(jobs, start=1)
    ]
    last_step = max((job.total_steps for job in jobs), default=0)
    return Chart(
        element_id="search-chart-data",
        description=(
            "Validation label accuracy by step, one line per trial"
            if by_accuracy
            else "Validation loss by step, one line per trial"
        ),
        x=Axis(title="Step", format="integer", min=0, max=last_step),
        y=Axis(title=ACCURACY_AXIS_TITLE, format="percent", min=0, max=1)
        if by_accuracy
        else Axis(title=LOSS_AXIS_TITLE),
        series=series,
    )
