"""The worker side of a hosted job: submit it once to the provider, then poll it until it ends,
mirroring its events, metrics and checkpoints into ours.

Submission is idempotent: the job's submission_key travels with the provider job, so a worker
that dies after the provider created the job but before we saved its id finds that job on the
retry instead of paying for a second one. Transient errors (429, 5xx, timeouts) are retried
with exponential backoff or after the provider's Retry-After; permanent ones fail the job with
the provider's message.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.adapters import hosted_fine_tuner_for
from datasets.models import Split
from ftportal.ownership import attempt_claim
from providers.base import (
    HostedJobState,
    HostedJobStatus,
    ProviderError,
    TransientProviderError,
)

from .estimates import hosted_cost
from .hooks import TrainedModel, model_version_keeper
from .hyperparameters import hosted_config
from .models import EventLevel, JobStatus, TrainingJob
from .runner import data_problems, problems_summary
from .services import checkpoint_record, cost_record, job_event, metric_record, transition
from .spending import hosted_spend_record

logger = logging.getLogger(__name__)

BACKOFF_CAP_SECONDS = 600.0
# OpenAI allows up to 64 characters of suffix; letters, digits, dashes and underscores are safe.
SUFFIX_LENGTH = 40
_NOT_SUFFIX = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Outcome:
    """What the task does next: retry after a transient error, poll later, or nothing."""

    retry_in: float | None = None
    poll_in: float | None = None


FINISHED = Outcome()


def backoff_seconds(tries: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return max(retry_after, 0.0)
    return min(settings.FTPORTAL_PROVIDER_BACKOFF_SECONDS * 2**tries, BACKOFF_CAP_SECONDS)


def _retry_or_fail(
    job: TrainingJob, error: TransientProviderError, *, tries: int, doing: str
) -> Outcome:
    if tries >= settings.FTPORTAL_PROVIDER_MAX_RETRIES:
        transition(
            job,
            JobStatus.FAILED,
            error=f"{doing}: gave up after {tries + 1} tries; last error: {error}",
        )
        return FINISHED
    delay = backoff_seconds(tries, error.retry_after)
    job_event(
        job,
        f"{doing}: {error}; trying again in {delay:.0f} s (try {tries + 1} of "
        f"{settings.FTPORTAL_PROVIDER_MAX_RETRIES + 1})",
        level=EventLevel.WARNING,
    )
    return Outcome(retry_in=delay)


def suffix_for(model_name: str) -> str:
    return _NOT_SUFFIX.sub("-", model_name).strip("-")[:SUFFIX_LENGTH]


def _conversations(job: TrainingJob, split: Split) -> list[list[dict[str, str]]]:
    return list(
        job.dataset_version.items.filter(split=split)
        .order_by("position")
        .values_list("messages", flat=True)
    )


def training_job_submit(*, job_id: int, tries: int = 0) -> Outcome:
    """Start the job at the provider (or find the one a dead worker started)."""
    with transaction.atomic():
        # The lock is held over the HTTP calls so two deliveries of this task never submit
        # at once; the submission key covers the case where one died half way.
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.provider_job_id:
            return Outcome(poll_in=0) if not job.is_finished else FINISHED
        if job.status == JobStatus.QUEUED:
            if job.cancel_requested:
                transition(job, JobStatus.CANCELLED)
                return FINISHED
            attempt_claim(job)
            transition(job, JobStatus.VALIDATING)
            problems = data_problems(job)
            if problems:
                transition(job, JobStatus.FAILED, error=problems_summary(problems))
                return FINISHED
        elif job.status != JobStatus.VALIDATING:
            return FINISHED
        try:
            fine_tuner = hosted_fine_tuner_for(job.base_model)
            provider_job_id = fine_tuner.submit(
                train=_conversations(job, Split.TRAIN),
                validation=_conversations(job, Split.VALIDATION),
                base_model=job.base_model.key,
                config=hosted_config(job.hyperparameters, suffix=suffix_for(job.model_name)),
                submission_key=str(job.submission_key),
            )
        except TransientProviderError as error:
            return _retry_or_fail(job, error, tries=tries, doing="Submitting the job")
        except ProviderError as error:
            transition(job, JobStatus.FAILED, error=f"The provider refused the job: {error}")
            return FINISHED
        job.provider_job_id = provider_job_id
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["provider_job_id", "heartbeat_at"])
        job_event(job, f"Submitted to {job.get_provider_display()} as {provider_job_id}")
    return Outcome(poll_in=0)


def training_job_poll(*, job_id: int, tries: int = 0) -> Outcome:
    """Read the provider's state once and mirror it; says when to read again."""
    job = TrainingJob.objects.select_related("base_model").get(pk=job_id)
    if job.is_finished or not job.provider_job_id:
        return FINISHED
    fine_tuner = hosted_fine_tuner_for(job.base_model)
    try:
        if job.cancel_requested:
            fine_tuner.cancel(job.provider_job_id)
        last_event = (
            job.events.exclude(provider_event_id="")
            .order_by("-id")
            .values_list("provider_event_id", flat=True)
            .first()
        )
        state = fine_tuner.poll(job.provider_job_id, after_event=last_event)
    except TransientProviderError as error:
        return _retry_or_fail(job, error, tries=tries, doing="Polling the job")
    except ProviderError as error:
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if not job.is_finished:
                transition(job, JobStatus.FAILED, error=f"Polling the job: {error}")
        return FINISHED
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.is_finished:
            return FINISHED
        _mirror(job, state)
        return _follow_status(job, state)


def _mirror(job: TrainingJob, state: HostedJobState) -> None:
    for event in state.events:
        level = EventLevel.ERROR if event.level == "error" else EventLevel.INFO
        job_event(job, event.message, level=level, provider_event_id=event.provider_id)
    epochs = int(job.hyperparameters.get("epochs") or 1)
    last_step = max((m.step for m in state.metrics), default=job.step)
    for metric in state.metrics:
        metric_record(
            job,
            step=metric.step,
            # The provider reports steps, not epochs; an estimate from the planned epochs.
            epoch=epochs * metric.step / job.total_steps if job.total_steps else 0.0,
            train_loss=metric.train_loss,
            val_loss=metric.val_loss,
        )
    for checkpoint in state.checkpoints:
        checkpoint_record(
            job,
            step=checkpoint.step,
            provider_model_id=checkpoint.model_id,
            train_loss=checkpoint.train_loss,
            val_loss=checkpoint.val_loss,
        )
    job.step = max(job.step, last_step)
    if state.estimated_finish:
        job.seconds_left = max(0.0, state.estimated_finish - timezone.now().timestamp())
    job.heartbeat_at = timezone.now()
    job.save(update_fields=["step", "seconds_left", "heartbeat_at"])


def _follow_status(job: TrainingJob, state: HostedJobState) -> Outcome:
    poll_later = Outcome(poll_in=settings.FTPORTAL_HOSTED_POLL_SECONDS)
    status = state.status
    if status in (HostedJobStatus.VALIDATING, HostedJobStatus.QUEUED):
        return poll_later
    if status == HostedJobStatus.RUNNING:
        if job.status == JobStatus.VALIDATING:
            transition(job, JobStatus.RUNNING)
        return poll_later
    if status == HostedJobStatus.CANCELLED:
        transition(job, JobStatus.CANCELLED)
        return FINISHED
    if status == HostedJobStatus.FAILED:
        transition(job, JobStatus.FAILED, error=state.error or "The provider failed the job.")
        return FINISHED
    _succeed(job, state)
    return FINISHED


def _succeed(job: TrainingJob, state: HostedJobState) -> None:
    trained_tokens = state.trained_tokens or 0
    if job.status == JobStatus.VALIDATING:
        transition(job, JobStatus.RUNNING)
    final_metric = job.metrics.order_by("-step").first()
    transition(
        job,
        JobStatus.SUCCEEDED,
        fine_tuned_model=state.fine_tuned_model or "",
        trained_tokens=trained_tokens,
    )
    hosted_spend_record(job, trained_tokens=trained_tokens)
    cost_record(job, hosted_cost(job.base_model, trained_tokens)[1])
    # Inside training_job_poll's transaction: the job succeeds with its model version or not
    # at all.
    model_version_keeper().job_succeeded(
        TrainedModel(
            job=job,
            checkpoint=None,
            fine_tuned_model=state.fine_tuned_model or "",
            train_loss=final_metric.train_loss if final_metric else None,
            val_loss=final_metric.val_loss if final_metric else None,
        )
    )
