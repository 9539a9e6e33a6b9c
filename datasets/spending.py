"""The datasets app's spends for the ledger (``ftportal.spending``): a quality analysis's worker
time (token counts and the analyzers run on a worker), as data preparation."""

from __future__ import annotations

from ftportal.spending import SpendKind, spend_record, worker_time_spend

from .models import AnalysisRun


def analysis_spend_record(run: AnalysisRun, *, seconds: float) -> None:
    """The worker time of ``run``, which ended now (succeeded or failed), at this worker's
    hourly rate; recorded once, with the run's final state."""
    spend_record(
        worker_time_spend(
            project_id=run.dataset.project_id,
            kind=SpendKind.DATA_PREPARATION,
            seconds=seconds,
            event=f"analysis_run:{run.pk}",
            origin=f"Quality analysis {run.pk} of dataset {run.dataset.name}",
        )
    )
