"""Experiments below the gateway: sticky, weighted assignment; routing of alias and pinned
names; the checks of create and start (one running experiment per alias, a vLLM server's
max_loras); each arm's figures from one aggregate query; the verdict; and "conclude" through
the promotion gate, promoted and refused."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalog.models import EndpointKind
from catalog.services import endpoint_register
from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from registry.models import ModelVersion
from registry.selectors import production_version
from serving import experiments
from serving.experiments import ShadowRequest, arm_index, experiment_route, mirrored
from serving.models import Experiment, ExperimentStatus
from serving.plans import serving_plan_read
from serving.selectors import experiment_arm_results, experiment_verdict
from serving.services import (
    ArmSpec,
    experiment_conclude,
    experiment_create,
    experiment_start,
    experiment_stop,
)
from tests.factories import finished_evaluation

from .experiment_builders import (
    SUCCESS,
    TwoVersions,
    logged,
    other_base,
    running_experiment,
    two_versions,
)

pytestmark = pytest.mark.django_db

USERS = [f"user-{n}" for n in range(10_000)]


@pytest.fixture
def versions(project: Project, lead: User) -> TwoVersions:
    return two_versions(project, lead)


# --- assignment -----------------------------------------------------------------------------


def test_each_user_stays_in_one_arm_and_the_weights_share_the_users() -> None:
    weights = [1, 3]
    first = [arm_index(experiment_id=7, user=user, weights=weights) for user in USERS]
    again = [arm_index(experiment_id=7, user=user, weights=weights) for user in USERS]
    assert first == again  # the same user, the same arm, on every request
    shares = Counter(first)
    # A fixed hash over fixed users: the share is the same on every run; a quarter within
    # 2 points is what any decent hash gives 10,000 users (the binomial sd is 0.43 points).
    assert abs(shares[0] / len(USERS) - 0.25) < 0.02
    assert abs(shares[1] / len(USERS) - 0.75) < 0.02


def test_another_experiment_reshuffles_the_users() -> None:
    here = [arm_index(experiment_id=7, user=user, weights=[1, 1]) for user in USERS[:1000]]
    there = [arm_index(experiment_id=8, user=user, weights=[1, 1]) for user in USERS[:1000]]
    moved = sum(a != b for a, b in zip(here, there, strict=True))
    assert 400 < moved < 600  # independent draws: about half change arm


def test_a_request_without_a_user_is_drawn_on_its_own() -> None:
    drawn = Counter(arm_index(experiment_id=7, user="", weights=[1, 1]) for _ in range(400))
    # Both arms appear (the chance that 400 fair draws all land on one is 2^-399).
    assert set(drawn) == {0, 1}


def test_the_shadow_share_mirrors_about_that_share_of_requests() -> None:
    ids = [f"req_{n:032x}" for n in range(4000)]
    assert not any(mirrored(experiment_id=1, request_id=i, share=0.0) for i in ids)
    assert all(mirrored(experiment_id=1, request_id=i, share=1.0) for i in ids)
    share = sum(mirrored(experiment_id=1, request_id=i, share=0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28


def test_the_shadow_threads_are_bounded_and_a_mirror_past_them_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    started: list[str] = []

    def held(shadow: ShadowRequest) -> None:
        started.append(shadow.primary_request_id)
        release.wait(30)

    monkeypatch.setattr(experiments, "_shadow_run", held)
    runner = experiments._ShadowRunner(concurrency=1)  # one runs, one waits
    request = ShadowRequest(
        primary_request_id="req_1",
        key=None,  # type: ignore[arg-type]
        requested_model="m",
        messages=[],
        max_tokens=1,
        temperature=0.0,
        caller_user="",
        target=None,  # type: ignore[arg-type]
    )
    try:
        assert runner.submit(request) and runner.submit(request)
        assert not runner.submit(request)  # returns at once, never queues without bound
        assert runner.skipped == 1
        # Operators read the count at /healthz (this process's runner).
        monkeypatch.setattr(experiments, "_runner", runner)
        assert json.loads(Client().get("/healthz").content)["shadow"] == {"skipped": 1}
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(started) == 2
    # Slots are given back as mirrors finish: a later mirror runs again.
    while not runner.submit(request):
        assert time.monotonic() < deadline, "no shadow slot came back"
        time.sleep(0.01)


# --- routing --------------------------------------------------------------------------------


def test_an_alias_with_a_running_experiment_routes_to_the_users_arm(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions, weights=(1, 1))
    plan = serving_plan_read(project=project, name="Ticket triage/production")
    served: dict[str, int] = {}
    for user in USERS[:200]:
        routed = experiment_route(
            resolution=plan.resolution, experiment=plan.experiment, user=user, request_id="req_1"
        )
        assert routed.arm is not None and routed.version is not None
        assert routed.version.pk in (versions.first.pk, versions.second.pk)
        position = arm_index(experiment_id=experiment.pk, user=user, weights=[1, 1])
        assert routed.arm.arm_name == ["control", "challenger"][position]
        served[user] = routed.version.pk
    assert set(served.values()) == {versions.first.pk, versions.second.pk}


def test_pinned_names_and_drafts_bypass_experiments(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    running_experiment(project, lead, versions)
    pinned = serving_plan_read(project=project, name="Ticket triage/triage@2")
    assert pinned.experiment is None
    routed = experiment_route(
        resolution=pinned.resolution, experiment=None, user="user-1", request_id="req_1"
    )
    assert routed.arm is None and routed.version == versions.second

    experiment_stop(experiment=Experiment.objects.get(), user=lead)
    running_experiment(project, lead, versions, start=False)  # a draft
    alias = serving_plan_read(project=project, name="Ticket triage/production")
    assert alias.experiment is None
    routed = experiment_route(
        resolution=alias.resolution, experiment=None, user="user-1", request_id="req_1"
    )
    assert routed.arm is None and routed.version == versions.first


# --- create and start -----------------------------------------------------------------------


def create(
    project: Project, lead: User, versions: TwoVersions, arms: list[ArmSpec], **kw: object
) -> Experiment:
    return experiment_create(
        project=project,
        user=lead,
        name=str(kw.pop("name", "checks")),
        registered_model=versions.first.registered_model,
        alias="production",
        success_event=SUCCESS,
        arms=arms,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("arms", "field"),
    [
        ([ArmSpec(name="only", model_version_id=-1)], "arms"),
        (
            [ArmSpec(name="a", model_version_id=0), ArmSpec(name="a", model_version_id=0)],
            "arms[1].name",
        ),
        (
            [
                ArmSpec(name="a", model_version_id=0, base_model_key="gpt-4.1-mini-2025-04-14"),
                ArmSpec(name="b", model_version_id=0),
            ],
            "arms[0].model_version_id",
        ),
        (
            [ArmSpec(name="a", model_version_id=0), ArmSpec(name="b", model_version_id=999999)],
            "arms[1].model_version_id",
        ),
        (
            [ArmSpec(name="a", model_version_id=0), ArmSpec(name="b", base_model_key="nope")],
            "arms[1].base_model_key",
        ),
        (
            [
                ArmSpec(name="a", model_version_id=0),
                ArmSpec(name="b", weight=0, model_version_id=0),
            ],
            "arms[1].weight",
        ),
    ],
)
def test_create_refuses_bad_arms_naming_the_field(
    project: Project, lead: User, versions: TwoVersions, arms: list[ArmSpec], field: str
) -> None:
    other_base()
    fixed = [
        ArmSpec(**{**arm.__dict__, "model_version_id": versions.first.pk})
        if arm.model_version_id == 0
        else arm
        for arm in arms
    ]
    with pytest.raises(ApplicationError) as refused:
        create(project, lead, versions, fixed)
    assert refused.value.extra["field"] == field
    assert refused.value.message.startswith(f"{field}:")
    assert not Experiment.objects.exists()


def test_a_shadow_arm_needs_a_share_and_a_share_needs_a_shadow_arm(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    arms = [
        ArmSpec(name="a", model_version_id=versions.first.pk),
        ArmSpec(name="b", model_version_id=versions.second.pk),
    ]
    with pytest.raises(ApplicationError, match="no shadow arm"):
        create(project, lead, versions, arms, shadow_share=0.5)
    shadow = [*arms, ArmSpec(name="s", base_model_key=other_base().key, shadow=True)]
    with pytest.raises(ApplicationError, match="shadow_share: give the share"):
        create(project, lead, versions, shadow)
    experiment = create(project, lead, versions, shadow, shadow_share=0.5)
    assert experiment.arms.get(name="s").weight == 0


def test_one_running_experiment_per_alias(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    first = running_experiment(project, lead, versions)
    second = running_experiment(project, lead, versions, start=False)
    with pytest.raises(ConflictError, match=f"'{first.name}' already runs on the alias"):
        experiment_start(experiment=second, user=lead)
    second.refresh_from_db()
    assert second.status == ExperimentStatus.DRAFT
    # The database holds the rule too, for two starts racing past the check.
    with pytest.raises(IntegrityError), transaction.atomic():
        Experiment.objects.filter(pk=second.pk).update(status=ExperimentStatus.RUNNING)
    experiment_stop(experiment=first, user=lead)
    assert experiment_start(experiment=second, user=lead).status == ExperimentStatus.RUNNING


def test_start_refuses_more_version_arms_than_the_vllm_server_keeps(
    project: Project, lead: User, versions: TwoVersions, settings: object
) -> None:
    endpoint = endpoint_register(
        name="gpu-host",
        kind=EndpointKind.VLLM,
        base_url="http://127.0.0.1:9/v1",
        secret_env="FAKE_CHAT_KEY",
        adapter_root="/artifacts",
        max_loras=1,
    )
    settings.FTPORTAL_GATEWAY_VLLM_ENDPOINT = endpoint.name  # type: ignore[attr-defined]
    # Versions trained here (local adapters), which the gateway serves on that vLLM server.
    ModelVersion.objects.filter(pk__in=[versions.first.pk, versions.second.pk]).update(
        fine_tuned_model="", adapter_dir="/artifacts/adapter"
    )
    experiment = running_experiment(project, lead, versions, start=False)
    with pytest.raises(ApplicationError) as refused:
        experiment_start(experiment=experiment, user=lead)
    assert "need 2 adapters" in refused.value.message
    assert f"'{endpoint.name}', which keeps at most 1 (its max_loras)" in refused.value.message
    endpoint.max_loras = 2
    endpoint.save()
    assert experiment_start(experiment=experiment, user=lead).status == ExperimentStatus.RUNNING


# --- results and verdict --------------------------------------------------------------------


def test_each_arms_figures_come_from_the_log_and_the_outcomes(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions, shadow=other_base(), shadow_share=0.5)
    control = logged(
        experiment, "control", requests=10, successes=4, errors=1, scores=(1.0, 0.0, 1.0, 1.0)
    )
    logged(experiment, "challenger", requests=20, successes=15, cost=Decimal("0.002"))
    # The shadow arm's mirrored answers count under the shadow arm only.
    logged(experiment, "shadow", requests=5, shadow_of=control[0])

    results = {result.arm.name: result for result in experiment_arm_results(experiment)}

    assert results["control"].requests == 10 and results["control"].successes == 4
    assert results["control"].success is not None
    assert results["control"].success.value == pytest.approx(0.4)
    assert results["control"].success.low < 0.4 < results["control"].success.high
    assert results["control"].error_rate == pytest.approx(0.1)
    assert results["control"].feedback_count == 4
    assert results["control"].feedback is not None
    assert results["control"].feedback.value == pytest.approx(0.75)
    # Latencies 100..109 ms: the median interpolates to 104.5.
    assert results["control"].latency_p50_ms == pytest.approx(104.5)
    assert results["control"].cost_per_1000 is None  # unpriced, never 0
    assert results["challenger"].requests == 20 and results["challenger"].successes == 15
    assert results["challenger"].feedback is None
    assert results["challenger"].cost_per_1000 == Decimal("2.0000")
    assert results["shadow"].requests == 5


def test_the_page_query_does_not_grow_with_the_requests(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    logged(experiment, "control", requests=5, successes=1)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            experiment_arm_results(Experiment.objects.get(pk=experiment.pk))
        return len(captured.captured_queries)

    few = queries()
    logged(experiment, "control", requests=300, successes=100, scores=(0.5,) * 50)
    logged(experiment, "challenger", requests=300, successes=200)
    assert queries() == few


def test_the_verdict_names_a_winner_only_when_the_rule_says_so(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    assert experiment_verdict(experiment, experiment_arm_results(experiment)).sentence.startswith(
        "Not enough evidence yet: no requests served by control, challenger"
    )
    logged(experiment, "control", requests=10, successes=4)
    logged(experiment, "challenger", requests=10, successes=6)
    unsure = experiment_verdict(experiment, experiment_arm_results(experiment))
    assert unsure.winner is None
    assert unsure.sentence.startswith(
        "Not enough evidence yet: no significant difference between challenger and control "
        f"on {SUCCESS} success rate"
    )
    logged(experiment, "control", requests=90, successes=36)
    logged(experiment, "challenger", requests=90, successes=54)
    sure = experiment_verdict(experiment, experiment_arm_results(experiment))
    assert sure.winner is not None and sure.winner.name == "challenger"
    assert sure.sentence.startswith(
        f"challenger wins: challenger beats control by 20.0 points {SUCCESS} success rate"
    )


# --- conclude -------------------------------------------------------------------------------


def won_by_challenger(experiment: Experiment) -> None:
    logged(experiment, "control", requests=100, successes=40)
    logged(experiment, "challenger", requests=100, successes=60)


def test_conclude_promotes_the_winner_through_the_gate(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    won_by_challenger(experiment)
    finished_evaluation(
        version=versions.second,
        against=versions.first,
        scores=[1.0] * 10,
        baseline_scores=[0.0] * 10,
        user=lead,
    )

    concluded = experiment_conclude(experiment=experiment, user=lead)

    assert concluded.status == ExperimentStatus.CONCLUDED
    assert concluded.promoted_version == versions.second
    assert production_version(versions.first.registered_model) == versions.second
    assert concluded.conclusion.startswith("challenger wins")


def test_the_gates_refusal_leaves_the_experiment_running(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    won_by_challenger(experiment)

    # No finished evaluation of the challenger against production: the gate refuses.
    with pytest.raises(ConflictError, match="No finished evaluation of"):
        experiment_conclude(experiment=experiment, user=lead)

    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    assert production_version(versions.first.registered_model) == versions.first


def test_conclude_refuses_without_a_winner_and_for_a_hosted_baseline(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    with pytest.raises(ConflictError, match="No arm has won yet"):
        experiment_conclude(experiment=experiment, user=lead)
    experiment_stop(experiment=experiment, user=lead)

    baseline = experiment_create(
        project=project,
        user=lead,
        name="against a hosted baseline",
        registered_model=versions.first.registered_model,
        alias="production",
        success_event=SUCCESS,
        arms=[
            ArmSpec(name="ours", model_version_id=versions.first.pk),
            ArmSpec(name="hosted", base_model_key=other_base().key),
        ],
    )
    experiment_start(experiment=baseline, user=lead)
    logged(baseline, "ours", requests=100, successes=40)
    logged(baseline, "hosted", requests=100, successes=60)
    with pytest.raises(ConflictError, match="cannot be promoted"):
        experiment_conclude(experiment=baseline, user=lead)
    baseline.refresh_from_db()
    assert baseline.status == ExperimentStatus.RUNNING


def test_a_winner_already_in_production_concludes_without_a_promotion(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    experiment = running_experiment(project, lead, versions)
    logged(experiment, "control", requests=100, successes=60)
    logged(experiment, "challenger", requests=100, successes=40)
    concluded = experiment_conclude(experiment=experiment, user=lead)
    assert concluded.status == ExperimentStatus.CONCLUDED
    assert concluded.promoted_version is None
    assert production_version(versions.first.registered_model) == versions.first
