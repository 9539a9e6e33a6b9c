"""The registry page reads every model in a fixed few queries: the API's prefetching query, one
read of the latest scores, the alias history and the endangered versions; never a few more per
model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ftportal.roles import Role
from registry.models import ModelVersion
from registry.services import model_version_promote, model_version_register
from tests.factories import finished_evaluation, frozen_version, production_number
from training.models import Checkpoint, JobStatus, TrainingJob

pytestmark = pytest.mark.django_db

RIGHT, WRONG = [1.0] * 10, [0.0] * 10


def _register(project, lead, base_model, data, name: str, step: int) -> ModelVersion:
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=data,
        base_model=base_model,
        provider="local",
        hyperparameters={"epochs": 3},
        model_name=name,
        created_by=lead,
        status=JobStatus.SUCCEEDED,
        actual_cost_usd=Decimal("0.0123"),
    )
    adapter = settings.FTPORTAL_ARTIFACTS_DIR / f"adapters/job-{job.pk}/checkpoint-{step}"
    checkpoint = Checkpoint.objects.create(job=job, step=step, path=str(adapter))
    return model_version_register(job=job, checkpoint=checkpoint, adapter_dir=str(adapter))


def _promote(version: ModelVersion, lead) -> None:
    model_version_promote(
        model_version=version,
        expected_current_version=production_number(version.registered_model),
        user=lead,
        reason="better",
    )


def _add_models(project, lead, base_model, data, names: range) -> None:
    """Models with everything the page shows: two evaluated versions, the second in production
    and the first its rollback target."""
    for n in names:
        v1 = _register(project, lead, base_model, data, f"model-{n}", step=10)
        finished_evaluation(
            version=v1, against=None, scores=RIGHT, baseline_scores=WRONG, user=lead
        )
        _promote(v1, lead)
        v2 = _register(project, lead, base_model, data, f"model-{n}", step=20)
        finished_evaluation(version=v2, against=v1, scores=RIGHT, baseline_scores=WRONG, user=lead)
        _promote(v2, lead)


def _page_queries(client: Client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_registry_page_reads_eight_models_in_as_many_queries_as_two(
    client: Client, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    data = frozen_version(project, lead)
    client.force_login(lead)
    url = reverse("model_list", args=[project.pk])

    _add_models(project, lead, base_model, data, range(2))
    with_two, page_two = _page_queries(client, url)
    _add_models(project, lead, base_model, data, range(2, 8))
    with_eight, page_eight = _page_queries(client, url)

    assert with_eight == with_two
    assert page_two.count("Roll back to v1") == 2
    assert page_eight.count("Roll back to v1") == 8
    assert page_eight.count('class="badge prod"') == 8
