"""Celery tasks for evaluation: thin, they load by id and call the worker-side services."""

from __future__ import annotations

from celery import shared_task

from .reaper import abandoned_eval_runs_reap
from .runner import eval_run_execute


@shared_task(acks_late=True)
def execute_eval_run(run_id: int) -> None:
    """Run or resume an evaluation; routed to the "inference" queue."""
    eval_run_execute(run_id=run_id)


@shared_task
def reap_abandoned_evaluations() -> list[int]:
    """Run by celery beat every FTPORTAL_REAPER_SECONDS, on the default queue."""
    return abandoned_eval_runs_reap()
