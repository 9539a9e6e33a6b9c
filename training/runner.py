"""The worker side of a local job: claim it, check the data, train with heartbeats, record
progress and checkpoints, and finish with its cost and a registered model version.

A job is owned by one attempt at a time. Each attempt bumps ``attempts``; every write the
worker makes is conditional on that number still being its own, so a worker that the reaper
gave up on (and whose job another worker resumed) cannot overwrite the newer attempt's work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog.adapters import fine_tuner_for
from datasets.models import Split
from datasets.quality.findings import ERROR
from datasets.quality.validation import validate_conversations
from datasets.test_sets import training_refusal
from ftportal.ownership import attempt_claim, heartbeat_for
from providers.base import (
    AnswerConstraint,
    CheckpointSaved,
    FineTuner,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
    TrainingSetupReport,
)

from .estimates import SPEEDS_EVENT_ID, JobSpeeds, local_cost
from .hooks import TrainedModel, model_version_keeper
from .hyperparameters import local_config
from .models import ACTIVE_STATUSES, Checkpoint, EventLevel, JobStatus, TrainingJob
from .services import checkpoint_record, cost_record, job_event, metric_record, transition
from .spending import local_attempt_spend_record

logger = logging.getLogger(__name__)

# How many data problems a failed validation names before "and N more".
PROBLEMS_SHOWN = 5


class AttemptSuperseded(Exception):
    """Another attempt owns the job now; this worker must stop touching it."""


def _owned(job_id: int, attempt: int) -> QuerySet[TrainingJob]:
    return TrainingJob.objects.filter(pk=job_id, attempts=attempt, status__in=ACTIVE_STATUSES)


def _claim(job_id: int) -> TrainingJob | None:
    """Take a queued job for this worker; None when it is not (or no longer) queued."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.status != JobStatus.QUEUED:
            logger.info("Job %s is %s; not running it", job.pk, job.status)
            return None
        if job.cancel_requested:
            transition(job, JobStatus.CANCELLED)
            return None
        # With a checkpoint to resume from, the data was checked by an earlier attempt.
        resuming = job.checkpoints.exists()
        attempt_claim(job)
        # A first attempt checks the data; a resumed one did that already.
        transition(job, JobStatus.RUNNING if resuming else JobStatus.VALIDATING)
        job_event(job, f"Attempt {job.attempts} on worker {job.worker}")
        return job


def _conversations(job: TrainingJob, split: Split) -> list[list[dict[str, str]]]:
    return list(
        job.dataset_version.items.filter(split=split)
        .order_by("position")
        .values_list("messages", flat=True)
    )


def data_problems(job: TrainingJob) -> list[str]:
    """Errors that make examples unusable for training, each naming the item and field; a
    held-out test set is refused whole (the launch refuses it; this holds for any job that
    reached a worker anyway, local or hosted)."""
    refusal = training_refusal(job.dataset_version)
    if refusal:
        return [refusal]
    rows = list(
        job.dataset_version.items.order_by("position").values_list("position", "split", "messages")
    )
    issues = validate_conversations([messages for _, _, messages in rows])
    return [
        f"{rows[issue.index][1]} item {rows[issue.index][0]}: {issue.message}"
        for issue in issues
        if issue.severity == ERROR
    ]


def problems_summary(problems: list[str]) -> str:
    more = len(problems) - PROBLEMS_SHOWN
    shown = "; ".join(problems[:PROBLEMS_SHOWN])
    return f"The dataset version has errors: {shown}" + (f"; and {more} more" if more > 0 else "")


def _latest_checkpoint(job: TrainingJob) -> Checkpoint | None:
    for checkpoint in job.checkpoints.order_by("-step"):
        if checkpoint.path and Path(checkpoint.path).is_dir():
            return checkpoint
    return None


def training_job_run(*, job_id: int) -> TrainingJob | None:
    """Run (or resume) a queued local job to its end in this process."""
    job = _claim(job_id)
    if job is None:
        return None
    attempt = job.attempts
    if job.status == JobStatus.VALIDATING:
        problems = data_problems(job)
        if problems:
            more = len(problems) - PROBLEMS_SHOWN
            summary = "; ".join(problems[:PROBLEMS_SHOWN]) + (
                f"; and {more} more" if more > 0 else ""
            )
            transition(job, JobStatus.FAILED, error=f"The dataset version has errors: {summary}")
            return job
        transition(job, JobStatus.RUNNING)
    resume = _latest_checkpoint(job)
    if resume is not None:
        # Steps after the checkpoint are trained again; their old points go.
        job.metrics.filter(step__gt=resume.step).delete()
        job_event(job, f"Resuming from the checkpoint at step {resume.step}")
    started = time.monotonic()
    try:
        with heartbeat_for(lambda: _owned(job.pk, attempt), name=f"heartbeat-job-{job.pk}"):
            result = _train(job, attempt, resume)
    except AttemptSuperseded:
        logger.warning("Job %s: attempt %s was superseded; stopping", job_id, attempt)
        return None
    except TrainingCancelled:
        if not _owned(job_id, attempt).exists():
            return None
        return _finish(job_id, attempt, JobStatus.CANCELLED, seconds=time.monotonic() - started)
    except (ProviderError, RuntimeError, ValueError, OSError) as exc:
        logger.exception("Training job %s failed", job_id)
        return _finish(
            job_id,
            attempt,
            JobStatus.FAILED,
            seconds=time.monotonic() - started,
            error=f"{type(exc).__name__}: {exc}",
        )
    return _succeed(job_id, attempt, result, seconds=time.monotonic() - started)


def _train(job: TrainingJob, attempt: int, resume: Checkpoint | None) -> TrainingResult:
    output_dir = Path(settings.FTPORTAL_ARTIFACTS_DIR) / "adapters" / f"job-{job.pk}"

    def on_progress(progress: TrainingProgress) -> None:
        _record_progress(job, attempt, progress)

    def on_checkpoint(saved: CheckpointSaved) -> None:
        _require_ownership(job.pk, attempt)
        checkpoint_record(
            job,
            step=saved.step,
            path=str(saved.path),
            train_loss=saved.train_loss,
            val_loss=saved.val_loss,
        )

    def should_stop() -> bool:
        owned = _owned(job.pk, attempt).values_list("cancel_requested", flat=True).first()
        return owned is None or owned  # gone from this attempt, or cancelled

    fine_tuner = fine_tuner_for(job.base_model)
    config = _config(job)
    device = str(getattr(fine_tuner, "device", ""))
    if device:
        _owned(job.pk, attempt).update(device=device)
        job.device = device
    _record_setup(job, attempt, fine_tuner, config)
    return fine_tuner.train(
        train=_conversations(job, Split.TRAIN),
        validation=_conversations(job, Split.VALIDATION),
        config=config,
        output_dir=output_dir,
        on_progress=on_progress,
        should_stop=should_stop,
        on_checkpoint=on_checkpoint,
        resume_from=Path(resume.path) if resume is not None else None,
    )


def _record_setup(
    job: TrainingJob, attempt: int, fine_tuner: FineTuner, config: TrainingConfig
) -> None:
    """A local fine-tuner's measured precision and attention kernel, on the job and in its
    events, before training starts (the first job of a worker process runs the probe here)."""
    describe = getattr(fine_tuner, "describe_setup", None)
    if describe is None:
        return
    report: TrainingSetupReport = describe(config)
    _owned(job.pk, attempt).update(precision=report.precision)
    job.precision = report.precision
    job_event(job, report.description)


def _config(job: TrainingJob) -> TrainingConfig:
    """The job's stored settings, with the label set that label accuracy is measured against
    (the dataset version's, which the lead does not type)."""
    config = local_config(job.hyperparameters)
    if config.validation_metric != "label_accuracy":
        return config
    constraint = AnswerConstraint.from_contract(job.dataset_version.answer_contract or {})
    labels = constraint.labels if constraint is not None else ()
    return replace(config, validation_labels=labels)


def _require_ownership(job_id: int, attempt: int) -> None:
    if not _owned(job_id, attempt).exists():
        raise AttemptSuperseded(f"job {job_id} attempt {attempt}")


def _record_progress(job: TrainingJob, attempt: int, progress: TrainingProgress) -> None:
    updated = _owned(job.pk, attempt).update(
        step=progress.step,
        total_steps=progress.total_steps,
        tokens_per_second=progress.tokens_per_second,
        seconds_left=progress.seconds_left,
        heartbeat_at=timezone.now(),
    )
    if not updated:
        raise AttemptSuperseded(f"job {job.pk} attempt {attempt}")
    metric_record(
        job,
        step=progress.step,
        epoch=progress.epoch,
        train_loss=progress.train_loss,
        val_loss=progress.val_loss,
        val_accuracy=progress.val_accuracy,
        learning_rate=progress.learning_rate,
        tokens_per_second=progress.tokens_per_second,
        seconds_left=progress.seconds_left,
    )


def _locked_if_owned(job_id: int, attempt: int) -> TrainingJob | None:
    return _owned(job_id, attempt).select_for_update().first()


def _finish(
    job_id: int, attempt: int, target: JobStatus, *, seconds: float, error: str = ""
) -> TrainingJob | None:
    with transaction.atomic():
        job = _locked_if_owned(job_id, attempt)
        if job is None:
            return None
        job.compute_seconds += seconds
        transition(job, target, error=error, compute_seconds=job.compute_seconds)
        local_attempt_spend_record(job, attempt=attempt, seconds=seconds)
        cost_record(job, _local_basis(job))
    return job


def _local_basis(job: TrainingJob) -> str:
    _, basis = local_cost(job.compute_seconds)
    return f"{basis} of worker time ({job.device or 'cpu'})"


def _succeed(
    job_id: int, attempt: int, result: TrainingResult, *, seconds: float
) -> TrainingJob | None:
    with transaction.atomic():
        job = _locked_if_owned(job_id, attempt)
        if job is None:
            return None
        best_step = result.best_step if result.best_step is not None else result.steps
        checkpoint = job.checkpoints.filter(step=best_step).first()
        watched = "label accuracy" if result.val_accuracy is not None else "loss"
        if result.stopped_early:
            job_event(
                job,
                f"Stopped early at step {result.steps}: validation {watched} stopped improving; "
                f"kept the best checkpoint, step {best_step}",
                level=EventLevel.WARNING,
            )
        elif best_step != result.steps:
            job_event(job, f"Kept the best checkpoint by validation {watched}, step {best_step}")
        job.compute_seconds += seconds
        transition(
            job,
            JobStatus.SUCCEEDED,
            device=result.device,
            adapter_dir=str(result.adapter_dir),
            step=result.steps,
            best_step=best_step,
            stopped_early=result.stopped_early,
            trained_tokens=result.trained_tokens,
            compute_seconds=job.compute_seconds,
            val_accuracy=result.val_accuracy,
            precision=result.precision or job.precision,
            model_flops_utilization=result.model_flops_utilization,
        )
        # What later jobs' launch estimates on this machine learn from (training.estimates).
        speeds = JobSpeeds.from_metrics(result.metrics)
        if speeds.training_tokens_per_second > 0:
            job_event(job, speeds.text(), provider_event_id=SPEEDS_EVENT_ID)
        local_attempt_spend_record(job, attempt=attempt, seconds=seconds)
        cost_record(job, _local_basis(job))
        # A search's trial is registered only if the search picks it (training.searches).
        if job.search_id is None:
            # In the same transaction: the job succeeds with its model version or not at all.
            model_version_keeper().job_succeeded(
                TrainedModel(
                    job=job,
                    checkpoint=checkpoint,
                    adapter_dir=str(result.adapter_dir),
                    train_loss=result.train_loss,
                    val_loss=result.val_loss,
                )
            )
    return job
