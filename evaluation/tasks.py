from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def execute_eval_run(run_id: int) -> None:
    from .services import eval_run_execute

    eval_run_execute(run_id=run_id)
