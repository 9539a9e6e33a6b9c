"""Writes for training: launch, cancel, state changes, and what workers record as jobs run.

The worker side lives in runner.py (local jobs), hosted.py (provider jobs) and reaper.py
(jobs whose worker went away); they all change a job's state through transition() here.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from datasets.quality.stats import tokens_per_epoch_text
from datasets.test_sets import training_refusal
from ftportal.errors import ApplicationError, ConflictError
from ftportal.idempotency import Once, once_per_key, request_fingerprint
from ftportal.models import Project
from ftportal.spending import SpentQuery, ledger_spent, new_spending_check
from ftportal.state import state_change

from .estimates import LaunchEstimate, end_of_life_problem, launch_estimate
from .hyperparameters import HOSTED_PROVIDERS
from .models import (
    FINISHED_JOB_STATUSES,
    JOB_TRANSITIONS,
    Checkpoint,
    EventLevel,
    JobEvent,
    JobStatus,
    TrainingJob,
    TrainingMetric,
    TrainingSearch,
)
from .recipes import job_hyperparameters

logger = logging.getLogger(__name__)


def job_event(
    job: TrainingJob,
    message: str,
    *,
    level: EventLevel = EventLevel.INFO,
    provider_event_id: str = "",
) -> None:
    """Append to the job's log; a provider event already recorded is skipped."""
    if provider_event_id:
        try:
            with transaction.atomic():
                JobEvent.objects.create(
                    job=job, level=level, message=message, provider_event_id=provider_event_id
                )
        except IntegrityError:
            pass  # read again on a later poll
        return
    JobEvent.objects.create(job=job, level=level, message=message)


def transition(job: TrainingJob, target: JobStatus, **changes: Any) -> None:
    """Move a job to ``target`` if JOB_TRANSITIONS allows it, with the other field changes
    (they win over the start and finish stamps set here), and record the move as an event."""
    now = timezone.now()
    stamps: dict[str, object] = {}
    if target in (JobStatus.VALIDATING, JobStatus.RUNNING) and job.started_at is None:
        stamps["started_at"] = now
    elif target in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        stamps.update(finished_at=now, seconds_left=None)
    state_change(
        job,
        kind="training job",
        target=target,
        allowed=JOB_TRANSITIONS,
        changes={**stamps, **changes},
    )
    level = EventLevel.ERROR if target == JobStatus.FAILED else EventLevel.INFO
    detail = f": {job.error}" if target == JobStatus.FAILED and job.error else ""
    job_event(job, f"{target.label}{detail}", level=level)
    if job.search_id is not None and target in FINISHED_JOB_STATUSES:
        search_id = job.search_id
        # Deferred: training.tasks imports this module to do the work it queues.
        from .tasks import advance_training_search

        # Once the trial's end is committed, its search starts the next trial or ends.
        transaction.on_commit(lambda: advance_training_search.delay(search_id))


def training_job_launch(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    user: User,
    idempotency_key: str,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str = "",
) -> Once[TrainingJob]:
    """training_job_create, once per idempotency key: a double-clicked Start button or a
    client's retry with the same key gets the job the first request queued (ftportal.idempotency
    says for how long). An empty key always queues a new job."""
    return once_per_key(
        project=project,
        user=user,
        scope="training_job",
        key=idempotency_key,
        fingerprint=request_fingerprint(
            {
                "dataset_version": dataset_version.pk,
                "base_model": base_model.key,
                "hyperparameters": hyperparameters or {},
                "model_name": model_name.strip(),
            }
        ),
        create=lambda: training_job_create(
            project=project,
            dataset_version=dataset_version,
            base_model=base_model,
            user=user,
            hyperparameters=hyperparameters,
            model_name=model_name,
        ),
        load=lambda pk: TrainingJob.objects.get(pk=pk, project=project),
    )


def training_job_create(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    user: User,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str = "",
    search: TrainingSearch | None = None,
) -> TrainingJob:
    """A queued job; with ``search``, a trial of that search (training.searches)."""
    if dataset_version.dataset.project_id != project.pk:
        raise ApplicationError("The dataset version belongs to another project.")
    # Here rather than in the launch only: every way of starting a job (the form, the API,
    # a retraining proposal, the demo command) meets it; the runners refuse it again.
    refusal = training_refusal(dataset_version)
    if refusal:
        raise ApplicationError(refusal, extra={"field": "dataset_version"})
    if not base_model.is_active:
        raise ApplicationError(
            f"Base model '{base_model.key}' is not enabled for training in this installation."
        )
    ended = end_of_life_problem(base_model, timezone.localdate())
    if ended:
        raise ApplicationError(ended, extra={"field": "base_model"})
    stored = job_hyperparameters(dataset_version, base_model, hyperparameters or {})
    estimate = launch_estimate(
        version=dataset_version, base_model=base_model, hyperparameters=stored
    )
    if estimate.train_examples == 0:
        raise ApplicationError(
            f"{dataset_version} has no training examples.", extra={"field": "dataset_version"}
        )
    # Last: a mistake in the request is said first; a budget's hard cap (409) is not the
    # request's fault and ends with the month or a raised budget.
    new_spending_check(project.pk)
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=dataset_version,
        base_model=base_model,
        provider=base_model.provider,
        # A local job keeps the validation and checkpoint intervals its estimate counted with:
        # the lead's own, or those scaled to the data (providers.base.default_intervals).
        hyperparameters={**stored, **estimate.intervals},
        model_name=model_name.strip() or f"{dataset_version.dataset.name}-ft",
        created_by=user,
        estimated_cost_usd=estimate.cost_usd,
        search=search,
    )
    job_event(job, f"Queued by {user.get_username()}; estimate: {_estimate_line(estimate)}")
    for warning in estimate.warnings:
        job_event(job, warning.message, level=EventLevel.WARNING)
    transaction.on_commit(lambda: dispatch(job))
    return job


def _estimate_line(estimate: LaunchEstimate) -> str:
    parts = [
        f"{tokens_per_epoch_text(estimate.tokens_per_epoch)}, "
        f"{estimate.training_tokens:,} training tokens in all ({estimate.epochs} epochs"
        + (f", ended by max steps at step {estimate.steps}" if estimate.capped_by_max_steps else "")
        + ")"
    ]
    if estimate.cost_usd is not None:
        parts.append(f"${estimate.cost_usd} ({estimate.cost_basis})")
    if estimate.time is not None:
        time = estimate.time
        parts.append(
            f"about {time.seconds / 60:.1f} min ({time.low_seconds / 60:.1f} to "
            f"{time.high_seconds / 60:.1f}; {time.validation_passes} validation passes, "
            f"{time.checkpoint_saves} saves; {time.basis})"
        )
    return ", ".join(parts)


def dispatch(job: TrainingJob) -> None:
    """Queue the task that starts (or resumes) the job: local jobs go to the training queue."""
    # Deferred: training.tasks imports this module to do the work it queues.
    from .tasks import run_training_job, submit_hosted_job

    if job.provider in HOSTED_PROVIDERS:
        submit_hosted_job.delay(job.pk)
    else:
        run_training_job.delay(job.pk)


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            raise ConflictError(f"Job {job.pk} has already {job.status}.")
        if job.status == JobStatus.QUEUED and not job.provider_job_id:
            transition(job, JobStatus.CANCELLED)
        else:
            # The worker checks this flag between steps (local) or on its next poll (hosted,
            # which then cancels at the provider) and stops cleanly.
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
            job_event(job, "Cancellation requested")
    if job.cancel_requested and job.provider in HOSTED_PROVIDERS:
        # Deferred: training.tasks imports this module to do the work it queues.
        from .tasks import poll_hosted_job

        transaction.on_commit(lambda: poll_hosted_job.delay(job.pk))
    return job


def metric_record(
    job: TrainingJob,
    *,
    step: int,
    epoch: float,
    train_loss: float | None = None,
    val_loss: float | None = None,
    val_accuracy: float | None = None,
    learning_rate: float | None = None,
    tokens_per_second: float | None = None,
    seconds_left: float | None = None,
) -> None:
    """One point on the curves; a step seen again (a resumed job, a re-read provider event)
    replaces the earlier point."""
    TrainingMetric.objects.update_or_create(
        job=job,
        step=step,
        defaults={
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "learning_rate": learning_rate,
            "tokens_per_second": tokens_per_second,
            "seconds_left": seconds_left,
        },
    )


def checkpoint_record(
    job: TrainingJob,
    *,
    step: int,
    path: str = "",
    provider_model_id: str = "",
    train_loss: float | None = None,
    val_loss: float | None = None,
) -> Checkpoint:
    checkpoint, created = Checkpoint.objects.update_or_create(
        job=job,
        step=step,
        defaults={
            "path": path,
            "provider_model_id": provider_model_id,
            "train_loss": train_loss,
            "val_loss": val_loss,
        },
    )
    if created:
        job_event(job, f"Checkpoint saved at step {step}")
    return checkpoint


# What TrainingJob.actual_cost_usd keeps of the ledger's amounts (its column's places).
COST_PLACES = Decimal("0.0001")


def cost_record(job: TrainingJob, basis: str) -> None:
    """The job's actual cost as the ledger holds it, after its spends were recorded in this
    transaction (``ftportal.spending.ledger_spent``; None when one is unpriced), with
    ``basis`` saying in words how it was priced."""
    spent = ledger_spent(SpentQuery(training_job_id=job.pk))
    cost = None if spent is None else spent.quantize(COST_PLACES)
    job.actual_cost_usd = cost
    job.cost_basis = basis
    job.save(update_fields=["actual_cost_usd", "cost_basis"])
    if cost is not None:
        job_event(job, f"Cost ${cost} ({basis})")
