from __future__ import annotations

import pytest

from ftportal.errors import ConflictError
from ftportal.roles import Role
from registry.models import AliasChange, AliasChangeKind
from registry.selectors import production_version
from registry.services import (
    model_version_promote,
    model_version_register,
    production_rollback,
)
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member):
    return make_member(Role.ML_LEAD)


def register(project, lead, base_model, version):
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        provider="local",
        hyperparameters={"epochs": 3},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    return model_version_register(
        job=job, checkpoint=None, adapter_dir=f"/tmp/a{job.pk}", train_loss=1.0, val_loss=1.2
    )


def test_a_registered_version_records_its_lineage(project, lead, base_model):
    data = frozen_version(project, lead)
    version = register(project, lead, base_model, data)
    assert version.number == 1
    assert version.dataset_hash == data.content_hash
    assert version.base_model == base_model
    assert version.hyperparameters == {"epochs": 3}


def test_rollback_walks_back_through_promotions_and_stops_at_the_first(project, lead, base_model):
    data = frozen_version(project, lead)
    v1, v2, v3 = (register(project, lead, base_model, data) for _ in range(3))
    for version in (v1, v2, v3):
        model_version_promote(model_version=version, user=lead)
    model = v1.registered_model
    production_rollback(registered_model=model, user=lead)
    assert production_version(model) == v2
    production_rollback(registered_model=model, user=lead)
    assert production_version(model) == v1
    with pytest.raises(ConflictError):
        production_rollback(registered_model=model, user=lead)
    kinds = list(AliasChange.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [AliasChangeKind.PROMOTE] * 3 + [AliasChangeKind.ROLLBACK] * 2
    assert set(AliasChange.objects.values_list("changed_by", flat=True)) == {lead.pk}


def test_promoting_the_current_production_version_is_refused(project, lead, base_model):
    v1 = register(project, lead, base_model, frozen_version(project, lead))
    model_version_promote(model_version=v1, user=lead)
    with pytest.raises(ConflictError):
        model_version_promote(model_version=v1, user=lead)
    assert AliasChange.objects.count() == 1
