"""Celery tasks of the datasets app: background imports and quality analysis.

Each task takes ids, loads its rows and calls a service; the service owns the work.
"""

from __future__ import annotations

from celery import shared_task

# -- quality analysis (issue 3) ---------------------------------------------------------------


@shared_task(acks_late=True)
def run_analysis(run_id: int) -> None:
    """Validate, count tokens and run the quality analyzers for one AnalysisRun."""
    from .quality_services import analysis_run_execute

    analysis_run_execute(run_id=run_id)
