"""Celery tasks of the datasets app: background imports and quality analysis.

Each task takes ids, loads its rows and calls a service; the service owns the work.
"""

from __future__ import annotations

from celery import shared_task

from .imports.reaper import abandoned_imports_reap
from .imports.services import import_batch_run
from .quality.services import analysis_run_execute


# acks_late: a worker lost mid-import gets the task redelivered; the import claims its batch
# under a row lock, so a redelivery of a finished or running import does nothing.
@shared_task(acks_late=True)
def run_import(batch_id: int) -> None:
    import_batch_run(batch_id=batch_id)


@shared_task(acks_late=True)
def run_analysis(run_id: int) -> None:
    """Validate, count tokens and run the quality analyzers for one AnalysisRun."""
    analysis_run_execute(run_id=run_id)


@shared_task
def reap_abandoned_imports() -> None:
    """Run by celery beat: end imports whose worker died, or that nobody ever started."""
    abandoned_imports_reap()
