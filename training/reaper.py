"""Finds jobs whose worker went away, so that no job stays "running" forever.

A local job's worker writes a heartbeat every few seconds; when none came for
FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS, the job goes back to the queue and the next worker resumes
it from its last checkpoint, up to FTPORTAL_MAX_JOB_ATTEMPTS attempts; after that it fails with
the reason. A hosted job trains at the provider whatever happens to our workers; its heartbeat
is the last poll, and a stale one only means the polling chain broke, so it is polled again.
"""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .hyperparameters import HOSTED_PROVIDERS
from .models import EventLevel, JobStatus, TrainingJob
from .services import dispatch, job_event, transition

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (JobStatus.VALIDATING, JobStatus.RUNNING)


def _silent_since(cutoff: datetime.datetime) -> Q:
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)


def abandoned_jobs_reap(*, now: datetime.datetime | None = None) -> list[int]:
    """Requeue, re-poll or fail every active job silent for too long; returns their ids."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS)
    candidates = TrainingJob.objects.filter(_silent_since(cutoff), status__in=ACTIVE_STATUSES)
    reaped = []
    for job_id in candidates.values_list("pk", flat=True):
        if _reap(job_id, cutoff, now):
            reaped.append(job_id)
    return reaped


def _reap(job_id: int, cutoff: datetime.datetime, now: datetime.datetime) -> bool:
    with transaction.atomic():
        # skip_locked: a job its worker is writing to right now is alive by definition.
        job = (
            TrainingJob.objects.select_for_update(skip_locked=True)
            .filter(_silent_since(cutoff), pk=job_id, status__in=ACTIVE_STATUSES)
            .first()
        )
        if job is None:
            return False
        last_seen = job.heartbeat_at or job.started_at
        seen = timezone.localtime(last_seen).strftime("%H:%M:%S") if last_seen else "never"
        if job.provider in HOSTED_PROVIDERS:
            _repoll(job, seen, now)
        elif job.attempts >= settings.FTPORTAL_MAX_JOB_ATTEMPTS:
            transition(
                job,
                JobStatus.FAILED,
                error=f"Worker {job.worker or '?'} stopped responding (last heartbeat {seen}); "
                f"gave up after {job.attempts} attempts.",
            )
        else:
            checkpoint = job.checkpoints.order_by("-step").first()
            where = f"the checkpoint at step {checkpoint.step}" if checkpoint else "the start"
            job_event(
                job,
                f"Worker {job.worker or '?'} stopped responding (last heartbeat {seen}); "
                f"queued again to resume from {where}",
                level=EventLevel.WARNING,
            )
            transition(job, JobStatus.QUEUED, heartbeat_at=None)
            transaction.on_commit(lambda: dispatch(job))
        logger.warning("Reaped training job %s (last heartbeat %s)", job.pk, seen)
        return True


def _repoll(job: TrainingJob, seen: str, now: datetime.datetime) -> None:
    from .tasks import poll_hosted_job, submit_hosted_job

    job.heartbeat_at = now  # one nudge per timeout, not one per reaper run
    job.save(update_fields=["heartbeat_at"])
    job_event(job, f"No word from the poller since {seen}; polling again", level=EventLevel.WARNING)
    task = poll_hosted_job if job.provider_job_id else submit_hosted_job
    transaction.on_commit(lambda: task.delay(job.pk))
