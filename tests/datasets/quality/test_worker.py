"""An analysis through the real Celery worker, ending with findings in the database."""

from __future__ import annotations

import pytest

from datasets.models import AnalysisRun, AnalysisStatus, Finding
from datasets.quality.services import analysis_run_create
from ftportal.roles import Role
from tests.conftest import wait_until

from .builders import planted_dataset

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def finished(run: AnalysisRun) -> bool:
    run.refresh_from_db()
    return run.status in (AnalysisStatus.SUCCEEDED, AnalysisStatus.FAILED)


def test_an_analysis_runs_on_the_worker_and_stores_findings(
    celery_worker_process, project, make_member, base_model
):
    dataset, made = planted_dataset(project)
    run = analysis_run_create(
        dataset=dataset, base_model=base_model, user=make_member(Role.REVIEWER)
    )
    wait_until(lambda: finished(run), timeout=120, what="the analysis run")
    assert run.status == AnalysisStatus.SUCCEEDED, run.failure_message
    kinds = set(Finding.objects.filter(run=run).values_list("example_id", "kind"))
    assert (made["dup_pending"].pk, "exact_duplicate") in kinds
    assert (made["email"].pk, "pii_email") in kinds
    assert run.stats["examples"] == 9
