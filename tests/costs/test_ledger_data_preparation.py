"""Data preparation's spends: a quality analysis's worker time, succeeded or failed, becomes one
ledger row at the worker's hourly rate, written with the run's final state, once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings

from catalog.models import BaseModel
from costs.models import LedgerEntry
from datasets.models import AnalysisRun, AnalysisStatus
from datasets.quality.services import analysis_run_create, analysis_run_execute
from ftportal.models import Project
from ftportal.spending import SECONDS_PER_PRICE, SpendKind, SpendUnit
from tests.datasets.quality.builders import planted_dataset, user

pytestmark = pytest.mark.django_db


@override_settings(FTPORTAL_LOCAL_USD_PER_HOUR="0.72")
def test_an_analysis_spends_its_worker_time_as_data_preparation_once(
    project: Project, base_model: BaseModel
) -> None:
    dataset, _ = planted_dataset(project)
    run = analysis_run_create(dataset=dataset, base_model=base_model, user=user())
    run = analysis_run_execute(run_id=run.pk)
    assert run.status == AnalysisStatus.SUCCEEDED
    entry = LedgerEntry.objects.get(event=f"analysis_run:{run.pk}")
    assert (entry.project_id, entry.kind, entry.unit) == (
        project.pk,
        SpendKind.DATA_PREPARATION,
        SpendUnit.COMPUTE_SECONDS,
    )
    assert entry.quantity > 0
    # quantity seconds at $0.72 an hour: quantity x 0.72 / 3600, to 8 places.
    assert entry.price == Decimal("0.72") and entry.price_per == SECONDS_PER_PRICE
    assert entry.amount == (entry.quantity * Decimal("0.72") / 3600).quantize(Decimal("1e-8"))
    # A second delivery of the finished run spends nothing more.
    analysis_run_execute(run_id=run.pk)
    assert LedgerEntry.objects.filter(kind=SpendKind.DATA_PREPARATION).count() == 1


def test_a_failed_analysis_spends_its_worker_time_too(project: Project) -> None:
    dataset, _ = planted_dataset(project)
    run = AnalysisRun.objects.create(dataset=dataset, base_model_key="gone", created_by=user())
    run = analysis_run_execute(run_id=run.pk)
    assert run.status == AnalysisStatus.FAILED
    entry = LedgerEntry.objects.get(event=f"analysis_run:{run.pk}")
    assert entry.kind == SpendKind.DATA_PREPARATION and entry.amount is not None
