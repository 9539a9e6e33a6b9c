"""Evaluation's side of the promotion gate: the registry's Evaluate puts a version beside the
version production serves, and the gate reads that run's comparison."""

from __future__ import annotations

import pytest

from evaluation.models import CandidateKind
from evaluation.services import eval_run_for_version
from ftportal.roles import Role
from registry.gate import GateVerdict
from registry.services import model_version_promote, promotion_evidence
from tests.factories import finished_evaluation, frozen_version, production_number
from tests.registry.test_services import register

pytestmark = pytest.mark.django_db


def test_evaluating_a_version_compares_it_with_production_on_the_same_items(
    project, make_member, base_model
):
    lead = make_member(Role.ML_LEAD)
    data = frozen_version(project, lead)
    v1, v2 = register(project, lead, base_model, data), register(project, lead, base_model, data)
    finished_evaluation(
        version=v1, against=None, scores=[1.0] * 10, baseline_scores=[0.0] * 10, user=lead
    )
    model_version_promote(
        model_version=v1,
        expected_current_version=production_number(v1.registered_model),
        user=lead,
        reason="beats the base",
    )

    run = eval_run_for_version(project=project, model_version=v2, user=lead)

    candidates = list(run.candidates.order_by("position"))
    assert [(c.kind, c.model_version_id) for c in candidates[:3]] == [
        (CandidateKind.MODEL_VERSION, v2.pk),
        (CandidateKind.MODEL_VERSION, v1.pk),
        (CandidateKind.BASE, None),
    ]
    assert candidates[1].label == "triage v1 (production)"
    # Production's own evaluation is the guide's comparison, without itself twice.
    again = eval_run_for_version(project=project, model_version=v1, user=lead)
    assert [c.model_version_id for c in again.candidates.all()].count(v1.pk) == 1


def test_an_unfinished_evaluation_is_no_evidence(project, make_member, base_model):
    lead = make_member(Role.ML_LEAD)
    v1 = register(project, lead, base_model, frozen_version(project, lead))
    queued = eval_run_for_version(project=project, model_version=v1, user=lead)

    evidence = promotion_evidence(model_version=v1)

    assert evidence.eval_run_id is None and queued.pk
    assert evidence.missing.startswith("No finished evaluation of triage v1 against its base")
    assert not evidence.allows_promotion


def test_the_gate_reads_the_newest_finished_evaluation(project, make_member, base_model):
    lead = make_member(Role.ML_LEAD)
    v1 = register(project, lead, base_model, frozen_version(project, lead))
    finished_evaluation(
        version=v1, against=None, scores=[1.0] * 10, baseline_scores=[0.0] * 10, user=lead
    )
    newest = finished_evaluation(
        version=v1, against=None, scores=[0.0] * 10, baseline_scores=[1.0] * 10, user=lead
    )

    evidence = promotion_evidence(model_version=v1, margin_points=10)

    assert (evidence.eval_run_id, evidence.verdict) == (newest.pk, GateVerdict.WORSE)
