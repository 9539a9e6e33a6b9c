from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def run_training_job(job_id: int) -> None:
    from .services import training_job_run

    training_job_run(job_id=job_id)
