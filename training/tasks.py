"""Celery tasks for training: thin, they load by id and call the worker-side services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .hosted import training_job_poll, training_job_submit
from .reaper import abandoned_jobs_reap
from .runner import training_job_run
from .searches import training_search_advance


@shared_task(acks_late=True)
def run_training_job(job_id: int) -> None:
    """Train (or resume) a local job; routed to the "training" queue."""
    training_job_run(job_id=job_id)


@shared_task(bind=True, acks_late=True, max_retries=None)
def submit_hosted_job(self: Any, job_id: int) -> None:
    outcome = training_job_submit(job_id=job_id, tries=self.request.retries)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    if outcome.poll_in is not None:
        poll_hosted_job.apply_async((job_id,), countdown=outcome.poll_in)


@shared_task(acks_late=True)
def poll_hosted_job(job_id: int, tries: int = 0) -> None:
    """Read a hosted job's state once and schedule the next read until it ends."""
    outcome = training_job_poll(job_id=job_id, tries=tries)
    if outcome.retry_in is not None:
        poll_hosted_job.apply_async((job_id, tries + 1), countdown=outcome.retry_in)
    elif outcome.poll_in is not None:
        poll_hosted_job.apply_async((job_id,), countdown=outcome.poll_in)


@shared_task(acks_late=True)
def advance_training_search(search_id: int) -> None:
    """After a search's trial ended: start its next trial, or end it and register the best."""
    training_search_advance(search_id=search_id)


@shared_task
def reap_abandoned_jobs() -> list[int]:
    """Run by celery beat every FTPORTAL_REAPER_SECONDS."""
    return abandoned_jobs_reap()
