"""Finds jobs whose worker went away, so that no job stays "running" forever.

A local job's worker writes a heartbeat every few seconds; when none came for
FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS, the job goes back to the queue and the next worker resumes
it from its last checkpoint, up to FTPORTAL_MAX_JOB_ATTEMPTS attempts (ftportal/ownership.py);
after that it fails with the reason. A hosted job trains at the provider whatever happens to our
workers; its heartbeat is the last poll, and a stale one only means the polling chain broke, so
it is polled again.
"""

from __future__ import annotations

import datetime
import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ftportal import ownership

from .hyperparameters import HOSTED_PROVIDERS
from .models import ACTIVE_STATUSES, EventLevel, JobStatus, TrainingJob
from .services import dispatch, job_event, transition

logger = logging.getLogger(__name__)


def abandoned_jobs_reap(*, now: datetime.datetime | None = None) -> list[int]:
    """Requeue, re-poll or fail every active job silent for too long; returns their ids."""
    now = now or timezone.now()
    return ownership.silent_rows_reap(
        TrainingJob.objects.all(),
        abandoned=ownership.silent_too_long(now) & Q(status__in=ACTIVE_STATUSES),
        decide=lambda job: _reap(job, now),
    )


def _reap(job: TrainingJob, now: datetime.datetime) -> None:
    seen = ownership.last_seen(job)
    if job.provider in HOSTED_PROVIDERS:
        _repoll(job, seen, now)
    elif ownership.attempts_exhausted(job):
        transition(job, JobStatus.FAILED, error=ownership.gave_up_error(job))
    else:
        checkpoint = job.checkpoints.order_by("-step").first()
        where = f"the checkpoint at step {checkpoint.step}" if checkpoint else "the start"
        job_event(
            job,
            f"{ownership.worker_gone(job)}; queued again to resume from {where}",
            level=EventLevel.WARNING,
        )
        ownership.ownership_release(job)
        transition(job, JobStatus.QUEUED)
        transaction.on_commit(lambda: dispatch(job))
    logger.warning("Reaped training job %s (last heartbeat %s)", job.pk, seen)


def _repoll(job: TrainingJob, seen: str, now: datetime.datetime) -> None:
    # Deferred: training.tasks imports this module to do the work it queues.
    from .tasks import poll_hosted_job, submit_hosted_job

    job.heartbeat_at = now  # one nudge per timeout, not one per reaper run
    job.save(update_fields=["heartbeat_at"])
    job_event(job, f"No word from the poller since {seen}; polling again", level=EventLevel.WARNING)
    task = poll_hosted_job if job.provider_job_id else submit_hosted_job
    transaction.on_commit(lambda: task.delay(job.pk))
