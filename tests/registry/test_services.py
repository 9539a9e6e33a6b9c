from __future__ import annotations

import pytest

from ftportal.errors import ApplicationError, ConflictError, PermissionDeniedError
from ftportal.roles import Role
from registry.gate import GateVerdict
from registry.models import Alias, AliasChange, AliasChangeKind
from registry.selectors import production_version
from registry.services import (
    model_version_promote,
    model_version_register,
    production_rollback,
)
from tests.factories import finished_evaluation, frozen_version, production_number, rollback_number
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


ALL_RIGHT = [1.0] * 10
ALL_WRONG = [0.0] * 10


def promote_as_better(version, lead, reason="better on the validation split"):
    """Give the version a finished evaluation in which it beats what production serves (its
    base model before the first promotion), then promote it."""
    finished_evaluation(
        version=version,
        against=production_version(version.registered_model),
        scores=ALL_RIGHT,
        baseline_scores=ALL_WRONG,
        user=lead,
    )
    return model_version_promote(
        model_version=version,
        expected_current_version=production_number(version.registered_model),
        user=lead,
        reason=reason,
    )


def test_rollback_walks_back_through_promotions_and_stops_at_the_first(project, lead, base_model):
    data = frozen_version(project, lead)
    v1, v2, v3 = (register(project, lead, base_model, data) for _ in range(3))
    for version in (v1, v2, v3):
        promote_as_better(version, lead)
    model = v1.registered_model
    production_rollback(
        registered_model=model,
        expected_current_version=production_number(model),
        target_version=rollback_number(model),
        user=lead,
        reason="drift",
    )
    assert production_version(model) == v2
    production_rollback(
        registered_model=model,
        expected_current_version=production_number(model),
        target_version=rollback_number(model),
        user=lead,
        reason="still drifting",
    )
    assert production_version(model) == v1
    with pytest.raises(ConflictError):
        production_rollback(
            registered_model=model,
            expected_current_version=production_number(model),
            target_version=rollback_number(model),
            user=lead,
            reason="again",
        )
    kinds = list(AliasChange.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [AliasChangeKind.PROMOTE] * 3 + [AliasChangeKind.ROLLBACK] * 2
    assert set(AliasChange.objects.values_list("changed_by", flat=True)) == {lead.pk}


def test_promoting_the_current_production_version_is_refused(project, lead, base_model):
    v1 = register(project, lead, base_model, frozen_version(project, lead))
    promote_as_better(v1, lead)
    with pytest.raises(ConflictError) as refused:
        model_version_promote(
            model_version=v1,
            expected_current_version=production_number(v1.registered_model),
            user=lead,
            reason="again",
        )
    assert refused.value.message == "'production' already points at version 1."
    assert AliasChange.objects.count() == 1


# --- the promotion gate ------------------------------------------------------------------------


@pytest.fixture
def admin(make_member):
    return make_member(Role.ADMIN)


@pytest.fixture
def two_versions(project, lead, base_model):
    """v1 in production (it beat its base model), v2 registered on the same data."""
    data = frozen_version(project, lead)
    v1 = register(project, lead, base_model, data)
    promote_as_better(v1, lead)
    return v1, register(project, lead, base_model, data)


def test_a_never_evaluated_version_is_not_promoted(project, lead, base_model):
    v1 = register(project, lead, base_model, frozen_version(project, lead))

    with pytest.raises(ConflictError) as refused:
        model_version_promote(
            model_version=v1,
            expected_current_version=production_number(v1.registered_model),
            user=lead,
            reason="looks good",
        )

    assert refused.value.message.startswith(
        "No finished evaluation of triage v1 against its base model SmolLM2-135M-Instruct"
    )
    assert not Alias.objects.exists() and not AliasChange.objects.exists()


def test_an_evaluation_against_the_base_model_is_not_evidence_against_production(
    two_versions, lead
):
    v1, v2 = two_versions
    finished_evaluation(
        version=v2, against=None, scores=ALL_RIGHT, baseline_scores=ALL_WRONG, user=lead
    )

    with pytest.raises(ConflictError) as refused:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason="beats the base",
        )

    assert refused.value.message.startswith(
        "No finished evaluation of triage v2 against production triage v1 on the same test set"
    )
    assert production_version(v1.registered_model) == v1
    assert AliasChange.objects.count() == 1


def test_a_better_version_is_promoted_and_the_history_keeps_the_evidence(two_versions, lead):
    v1, v2 = two_versions
    run = finished_evaluation(
        version=v2, against=v1, scores=ALL_RIGHT, baseline_scores=ALL_WRONG, user=lead
    )

    change = model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=lead,
        reason="ten of ten",
    )

    assert production_version(v1.registered_model) == v2
    stored = AliasChange.objects.get(pk=change.pk)
    assert stored.reason == "ten of ten" and stored.overridden is False
    evidence = stored.evidence
    assert evidence["eval_run_id"] == run.pk
    assert evidence["metric"] == "exact_match"
    assert (evidence["candidate_score"], evidence["baseline_score"]) == (1.0, 0.0)
    assert (evidence["ci_low"], evidence["ci_high"]) == (1.0, 1.0)
    assert evidence["verdict"] == GateVerdict.BETTER
    assert evidence["margin_points"] == 0.0
    assert evidence["baseline"] == "production triage v1"


# v2 misses one item of twelve that v1 gets right: the paired 95 % interval of v2 minus v1 is
# about -25 to 0 points, so v2 is no worse than v1 by a 30-point margin, but not by 10.
ONE_LOSS = ([1.0] * 11 + [0.0], [1.0] * 12)


def test_a_version_within_the_leads_margin_is_promoted_as_no_worse(two_versions, lead):
    v1, v2 = two_versions
    finished_evaluation(
        version=v2, against=v1, scores=ONE_LOSS[0], baseline_scores=ONE_LOSS[1], user=lead
    )

    with pytest.raises(ConflictError) as refused:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason="cheaper",
            margin_points=10,
        )
    assert "not shown to be no worse" in refused.value.message
    assert production_version(v1.registered_model) == v1

    change = model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=lead,
        reason="cheaper",
        margin_points=30,
    )

    assert production_version(v1.registered_model) == v2
    assert change.evidence["verdict"] == GateVerdict.NO_WORSE
    assert change.evidence["margin_points"] == 30
    assert -0.30 < change.evidence["ci_low"] <= -0.10


def test_a_worse_version_is_refused_and_a_lead_cannot_override(two_versions, lead):
    v1, v2 = two_versions
    finished_evaluation(
        version=v2, against=v1, scores=ALL_WRONG, baseline_scores=ALL_RIGHT, user=lead
    )

    with pytest.raises(ConflictError) as refused:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason="trust me",
            margin_points=50,
        )
    assert "triage v2 is worse compared with production triage v1" in refused.value.message
    with pytest.raises(PermissionDeniedError) as denied:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason="trust me",
            override=True,
        )

    assert "only an admin may override" in denied.value.message
    assert production_version(v1.registered_model) == v1
    assert AliasChange.objects.count() == 1


def test_an_admin_override_is_recorded_with_its_reason_and_the_evidence(two_versions, lead, admin):
    v1, v2 = two_versions
    run = finished_evaluation(
        version=v2, against=v1, scores=ALL_WRONG, baseline_scores=ALL_RIGHT, user=lead
    )

    change = model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=admin,
        reason="v1's provider shuts down today",
        override=True,
    )

    assert production_version(v1.registered_model) == v2
    stored = AliasChange.objects.get(pk=change.pk)
    assert stored.overridden is True
    assert stored.reason == "v1's provider shuts down today"
    assert stored.changed_by == admin
    assert stored.evidence["eval_run_id"] == run.pk
    assert stored.evidence["verdict"] == GateVerdict.WORSE


def test_an_override_is_not_needed_and_not_recorded_when_the_evidence_allows(two_versions, admin):
    v1, v2 = two_versions
    finished_evaluation(
        version=v2, against=v1, scores=ALL_RIGHT, baseline_scores=ALL_WRONG, user=admin
    )
    change = model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=admin,
        reason="better",
        override=True,
    )
    assert change.overridden is False


@pytest.mark.parametrize("reason", ["", "   "])
def test_promotion_and_rollback_need_a_reason(two_versions, lead, reason):
    v1, v2 = two_versions
    finished_evaluation(
        version=v2, against=v1, scores=ALL_RIGHT, baseline_scores=ALL_WRONG, user=lead
    )
    model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=lead,
        reason="better",
    )

    with pytest.raises(ApplicationError) as no_reason:
        production_rollback(
            registered_model=v1.registered_model,
            expected_current_version=production_number(v1.registered_model),
            target_version=rollback_number(v1.registered_model),
            user=lead,
            reason=reason,
        )
    assert no_reason.value.message == "Give a reason for the rollback."
    assert production_version(v1.registered_model) == v2
    production_rollback(
        registered_model=v1.registered_model,
        expected_current_version=production_number(v1.registered_model),
        target_version=rollback_number(v1.registered_model),
        user=lead,
        reason="drift",
    )
    with pytest.raises(ApplicationError) as no_reason:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason=reason,
        )
    assert no_reason.value.message == "Give a reason for the promotion."
    assert AliasChange.objects.count() == 3


def test_a_margin_outside_its_range_is_refused(two_versions, lead):
    _, v2 = two_versions
    with pytest.raises(ApplicationError) as refused:
        model_version_promote(
            model_version=v2,
            expected_current_version=production_number(v2.registered_model),
            user=lead,
            reason="x",
            margin_points=-1,
        )
    assert refused.value.extra == {"field": "margin"}
