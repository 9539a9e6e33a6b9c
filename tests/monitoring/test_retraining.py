"""Retraining proposals (issue 17 item 5): enough new approved examples since the served
version's data, a drift alert on its alias, or its base model going away propose a retrain: a
pre-filled training job and the evaluation that gates it, waiting for a lead. Nothing is
launched before a lead accepts; accepting launches through training's own checks (the budget's
hard cap leaves the proposal open and stores nothing), and the gating evaluation is queued
once the job's version is registered."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from catalog.models import BaseModel, Provider
from costs.budgets import budget_remove, budget_set
from datasets.models import DatasetVersion
from datasets.services import dataset_version_freeze
from evaluation.models import CandidateKind, EvalRun, EvalSplit
from ftportal.errors import ConflictError
from ftportal.models import Project
from ftportal.spending import (
    TOKENS_PER_PRICE,
    Spend,
    SpendingRefused,
    SpendKind,
    SpendUnit,
    spend_record,
)
from monitoring.alerts import AlertRaise, alert_raise
from monitoring.models import (
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    Comparison,
    Figure,
    MonitoringSettings,
    ProposalState,
    RetrainProposal,
)
from monitoring.retraining import (
    proposal_alert_key,
    retrain_accept,
    retrain_check,
    retrain_checks_run,
    retrain_dismiss,
    retrain_followups_run,
)
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import production_version
from registry.services import model_version_promote, model_version_register
from serving.generations import cache_key, redis_client, redis_url
from tests.factories import (
    approved_examples,
    finished_evaluation,
    production_number,
    registered_version,
)
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_refusal_left_in_redis() -> Iterator[None]:
    """A budget's refusal is copied to Redis until the month ends: none outlives its test."""
    yield
    url = redis_url()
    if url is not None:
        for key in redis_client(url).scan_iter(match=cache_key("serving:refused:*")):
            redis_client(url).delete(key)


def in_production(version: ModelVersion, lead: User) -> ModelVersion:
    """Promote ``version`` after the evaluation the gate asks for (it beat what serves now)."""
    items = version.dataset_version.items.count()
    finished_evaluation(
        version=version,
        against=production_version(version.registered_model),
        scores=[1.0] * items,
        baseline_scores=[0.0] * items,
        user=lead,
    )
    model_version_promote(
        model_version=version,
        expected_current_version=production_number(version.registered_model),
        user=lead,
        reason="better",
    )
    return version


@pytest.fixture
def served(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    """A local version in production, trained on 12 approved examples (3 validation items)."""
    return in_production(
        registered_version(project, lead, base_model, adapter_dir="/nowhere/served"), lead
    )


def new_examples(version: ModelVersion, count: int) -> None:
    approved_examples(version.dataset_version.dataset, count)


def check(version: ModelVersion) -> RetrainProposal | None:
    return retrain_check(registered_model=version.registered_model)


def drift_alert(version: ModelVersion) -> Alert:
    """An unresolved alert of a drift rule on the version's production alias."""
    rule = AlertRule.objects.create(
        project=version.registered_model.project,
        registered_model=version.registered_model,
        figure=Figure.EMBEDDING_DRIFT_AUC,
        comparison=Comparison.ABOVE,
        threshold=0.75,
    )
    return alert_raise(
        AlertRaise(
            project_id=rule.project_id,
            kind=AlertKind.RULE,
            key=f"rule:{rule.pk}",
            title="Input drift: domain classifier ROC AUC above 0.75",
            rule=rule,
            registered_model_id=version.registered_model_id,
            model_version_id=version.pk,
            value=0.91,
            threshold=0.75,
        )
    ).alert


def hosted_base(**dates: dt.date) -> BaseModel:
    return BaseModel.objects.create(
        key="hosted-mini",
        display_name="Hosted Mini",
        provider=Provider.OPENAI,
        training_usd_per_million_tokens=Decimal("3"),
        **dates,
    )


def dollars_spent(project: Project, amount: str) -> None:
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.EVALUATION,
            quantity=Decimal(amount) * TOKENS_PER_PRICE,
            unit=SpendUnit.TOKENS,
            price=Decimal(1),
            price_per=TOKENS_PER_PRICE,
            price_source="test: $1 a million tokens",
            event=f"test-spend:{project.pk}:{amount}",
            origin="a test",
            occurred_at=timezone.now(),
        )
    )


# --- what proposes a retrain ---------------------------------------------------------------------


def test_below_the_threshold_nothing_is_proposed(served: ModelVersion) -> None:
    new_examples(served, 199)
    assert check(served) is None
    assert RetrainProposal.objects.count() == 0
    assert Alert.objects.filter(kind=AlertKind.RETRAIN).count() == 0


def test_200_new_approved_examples_propose_one_retrain_prefilled_from_the_served_version(
    served: ModelVersion, base_model: BaseModel
) -> None:
    jobs_before = TrainingJob.objects.count()
    new_examples(served, 200)

    proposal = check(served)
    assert check(served) == proposal  # checking again changes nothing
    retrain_checks_run()  # nor does the hourly task

    assert proposal is not None and RetrainProposal.objects.count() == 1
    assert proposal.state == ProposalState.OPEN
    assert proposal.served_version == served and proposal.alias == "production"
    assert [reason["kind"] for reason in proposal.reasons] == ["new_examples"]
    assert "200 approved examples" in proposal.reasons[0]["text"]
    # Nothing frozen since: the approved examples are frozen when a lead accepts.
    assert proposal.dataset_version is None
    assert proposal.base_model == base_model
    assert proposal.hyperparameters == {"epochs": 1}
    plan = proposal.evaluation_plan
    assert plan["baseline_version_id"] == served.pk
    assert (plan["split"], plan["primary_metric"], plan["margin_points"]) == (
        EvalSplit.VALIDATION,
        "exact_match",
        0.0,
    )
    # One alert for the proposal; nothing launched or queued.
    alert = Alert.objects.get(kind=AlertKind.RETRAIN)
    assert alert.key == proposal_alert_key(proposal) and alert.times_raised == 1
    assert TrainingJob.objects.count() == jobs_before


def test_the_projects_threshold_is_its_setting(served: ModelVersion) -> None:
    MonitoringSettings.objects.create(
        project=served.registered_model.project, retrain_min_new_examples=5
    )
    new_examples(served, 4)
    assert check(served) is None
    new_examples(served, 1)
    assert check(served) is not None


def test_a_newer_frozen_version_holding_the_new_examples_is_proposed(
    served: ModelVersion, lead: User
) -> None:
    new_examples(served, 200)
    newer = dataset_version_freeze(
        dataset=served.dataset_version.dataset, user=lead, validation_fraction=0.2
    )
    proposal = check(served)
    assert proposal is not None and proposal.dataset_version == newer
    assert proposal.evaluation_plan["dataset_version_id"] == newer.pk


def test_a_drift_alert_proposes_a_retrain_on_the_same_base(
    served: ModelVersion, base_model: BaseModel
) -> None:
    alert = drift_alert(served)
    proposal = check(served)
    assert proposal is not None
    assert [reason["kind"] for reason in proposal.reasons] == ["drift"]
    assert alert.title in proposal.reasons[0]["text"]
    assert proposal.base_model == base_model
    # No approved example since: the served version's own data is the latest.
    assert proposal.dataset_version == served.dataset_version

    # New examples later join the same proposal as a second reason.
    new_examples(served, 200)
    again = check(served)
    assert again == proposal and RetrainProposal.objects.count() == 1
    assert [reason["kind"] for reason in again.reasons] == ["new_examples", "drift"]
    assert Alert.objects.get(kind=AlertKind.RETRAIN).times_raised == 2


def test_a_resolved_drift_alert_proposes_nothing(served: ModelVersion) -> None:
    alert = drift_alert(served)
    Alert.objects.filter(pk=alert.pk).update(state=AlertState.RESOLVED)
    assert check(served) is None


def test_a_retiring_base_proposes_a_local_base_model_with_the_local_trainer(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    hosted = hosted_base(retires_at=timezone.localdate() + dt.timedelta(days=30))
    served = in_production(
        registered_version(project, lead, hosted, fine_tuned_model="ft:hosted-mini:x"), lead
    )
    proposal = check(served)
    assert proposal is not None
    assert [reason["kind"] for reason in proposal.reasons] == ["base_retiring"]
    text = proposal.reasons[0]["text"]
    assert "Hosted Mini shuts down" in text and "local LoRA trainer" in text
    assert proposal.base_model == base_model
    # The hosted job's epochs carry over; the local launcher takes them.
    assert proposal.hyperparameters == {"epochs": 1}


def test_a_base_retiring_later_than_90_days_proposes_nothing(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    hosted = hosted_base(retires_at=timezone.localdate() + dt.timedelta(days=91))
    served = in_production(
        registered_version(project, lead, hosted, fine_tuned_model="ft:hosted-mini:x"), lead
    )
    assert check(served) is None


def test_a_new_production_version_supersedes_the_open_proposal(
    served: ModelVersion, project: Project, lead: User, base_model: BaseModel
) -> None:
    drift_alert(served)
    first = check(served)
    assert first is not None
    job = served.training_job
    newer = in_production(
        model_version_register(job=job, checkpoint=None, adapter_dir="/nowhere/v2"), lead
    )
    second = check(newer)
    first.refresh_from_db()
    assert first.state == ProposalState.SUPERSEDED
    assert second is not None and second.served_version == newer
    assert Alert.objects.get(key=proposal_alert_key(first)).state == AlertState.RESOLVED


# --- a lead deciding -----------------------------------------------------------------------------


@pytest.fixture
def proposed(served: ModelVersion) -> RetrainProposal:
    new_examples(served, 200)
    proposal = check(served)
    assert proposal is not None
    return proposal


def test_accepting_freezes_the_examples_and_launches_the_prefilled_job(
    proposed: RetrainProposal,
    lead: User,
    base_model: BaseModel,
    unsent_tasks: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    served_data = proposed.served_version.dataset_version
    with django_capture_on_commit_callbacks(execute=True):
        accepted = retrain_accept(proposal=proposed, user=lead)

    job = accepted.training_job
    assert job is not None and accepted.state == ProposalState.ACCEPTED
    assert (accepted.decided_by, job.created_by) == (lead, lead)
    frozen = job.dataset_version
    assert frozen.dataset == served_data.dataset and frozen.number == served_data.number + 1
    assert frozen.example_count == 212
    assert accepted.dataset_version == frozen
    assert accepted.evaluation_plan["dataset_version_id"] == frozen.pk
    assert (job.base_model, job.model_name) == (base_model, proposed.registered_model.name)
    assert job.hyperparameters["epochs"] == 1
    assert unsent_tasks == ["training.tasks.run_training_job"]
    assert Alert.objects.get(key=proposal_alert_key(proposed)).state == AlertState.RESOLVED

    with pytest.raises(ConflictError, match="accepted already"):
        retrain_accept(proposal=proposed, user=lead)
    assert TrainingJob.objects.filter(dataset_version=frozen).count() == 1


def test_the_budgets_hard_cap_refuses_the_launch_and_leaves_the_proposal_open(
    proposed: RetrainProposal, project: Project, lead: User
) -> None:
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "10")
    jobs, versions = TrainingJob.objects.count(), DatasetVersion.objects.count()

    with pytest.raises(SpendingRefused) as refused:
        retrain_accept(proposal=proposed, user=lead)

    assert refused.value.status_code == 409 and "budget" in refused.value.message
    proposed.refresh_from_db()
    assert proposed.state == ProposalState.OPEN and proposed.training_job is None
    # Nothing frozen, nothing launched, the alert still up.
    assert (TrainingJob.objects.count(), DatasetVersion.objects.count()) == (jobs, versions)
    assert Alert.objects.get(key=proposal_alert_key(proposed)).state == AlertState.OPEN


def test_a_dismissed_proposal_is_not_proposed_again_until_as_many_examples_again(
    proposed: RetrainProposal, lead: User
) -> None:
    served = proposed.served_version
    dismissed = retrain_dismiss(proposal=proposed, user=lead, note="  next quarter  ")
    assert (dismissed.state, dismissed.decision_note) == (ProposalState.DISMISSED, "next quarter")
    assert Alert.objects.get(key=proposal_alert_key(proposed)).state == AlertState.RESOLVED
    with pytest.raises(ConflictError):
        retrain_dismiss(proposal=proposed, user=lead)

    assert check(served) is None
    new_examples(served, 199)
    assert check(served) is None
    new_examples(served, 1)
    again = check(served)
    assert again is not None and again.pk != proposed.pk
    assert again.reasons[0]["count"] == 400


def test_a_dismissal_note_over_the_limit_names_the_field_and_stores_nothing(
    proposed: RetrainProposal, lead: User
) -> None:
    with pytest.raises(Exception, match="note") as refused:
        retrain_dismiss(proposal=proposed, user=lead, note="x" * 2001)
    assert getattr(refused.value, "extra", {}) == {"field": "note"}
    proposed.refresh_from_db()
    assert proposed.state == ProposalState.OPEN and proposed.decided_by is None


# --- after the job -------------------------------------------------------------------------------


def test_the_gating_evaluation_is_queued_once_the_jobs_version_is_registered(
    proposed: RetrainProposal, lead: User
) -> None:
    accepted = retrain_accept(proposal=proposed, user=lead)
    job = accepted.training_job
    assert job is not None
    assert retrain_followups_run() == 0  # no version yet
    assert EvalRun.objects.filter(dataset_version=job.dataset_version).count() == 0

    version = model_version_register(job=job, checkpoint=None, adapter_dir="/nowhere/new")
    assert retrain_followups_run() == 1
    assert retrain_followups_run() == 0  # done once

    accepted.refresh_from_db()
    run = accepted.eval_run
    assert run is not None and run.created_by == lead
    assert (run.dataset_version, run.split, run.primary_metric) == (
        job.dataset_version,
        EvalSplit.VALIDATION,
        "exact_match",
    )
    candidates = list(run.candidates.order_by("position"))
    assert [(c.kind, c.model_version) for c in candidates] == [
        (CandidateKind.MODEL_VERSION, version),
        (CandidateKind.MODEL_VERSION, proposed.served_version),
    ]
    assert EvalRun.objects.filter(dataset_version=job.dataset_version).count() == 1
    assert RegisteredModel.objects.get(pk=version.registered_model_id) == proposed.registered_model


def test_the_hourly_task_queues_followups_and_checks_every_production_alias(
    proposed: RetrainProposal, lead: User, settings: Any
) -> None:
    from monitoring.tasks import retrain_checks_run as task

    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert task.name in names
    accepted = retrain_accept(proposal=proposed, user=lead)
    assert accepted.training_job is not None
    model_version_register(job=accepted.training_job, checkpoint=None, adapter_dir="/nowhere/t")
    drift_alert(proposed.served_version)  # a new reason: a new proposal

    assert task() == 1
    accepted.refresh_from_db()
    assert accepted.eval_run is not None
    assert RetrainProposal.objects.filter(state=ProposalState.OPEN).count() == 1


def test_a_refused_gating_evaluation_raises_an_alert_and_is_queued_once_allowed(
    project: Project, lead: User
) -> None:
    hosted = hosted_base()
    served = in_production(
        registered_version(project, lead, hosted, fine_tuned_model="ft:hosted-mini:x"), lead
    )
    drift_alert(served)
    proposal = check(served)
    assert proposal is not None and proposal.base_model == hosted
    accepted = retrain_accept(proposal=proposal, user=lead)
    assert accepted.training_job is not None
    model_version_register(
        job=accepted.training_job, checkpoint=None, fine_tuned_model="ft:hosted-mini:y"
    )
    # The hosted versions bill their evaluation per token, which the hard cap refuses.
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "10")

    assert retrain_followups_run() == 0
    key = f"retrain:{proposal.pk}:evaluation"
    refused = Alert.objects.get(key=key)
    assert refused.state == AlertState.OPEN and "budget" in refused.message
    accepted.refresh_from_db()
    assert accepted.eval_run is None

    budget_remove(project=project, user=lead)
    assert retrain_followups_run() == 1
    accepted.refresh_from_db()
    assert accepted.eval_run is not None
    assert Alert.objects.get(key=key).state == AlertState.RESOLVED
