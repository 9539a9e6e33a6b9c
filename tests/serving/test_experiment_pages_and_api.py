"""Experiments through the pages and the API, for every role: every member reads the list and
a detail with each arm's figures and the verdict; leads and admins create, start, stop and
conclude; the others get a 403 naming their role, an outsider a 404; the gate's refusal shows
as a clear error; names are escaped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ftportal.models import Project
from ftportal.roles import Role
from registry.selectors import production_version
from serving.models import Experiment, ExperimentStatus
from tests.api.builders import token_client
from tests.factories import finished_evaluation
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

from .experiment_builders import (
    SUCCESS,
    TwoVersions,
    logged,
    other_base,
    running_experiment,
    two_versions,
)

pytestmark = pytest.mark.django_db

MANAGERS = [Role.ML_LEAD, Role.ADMIN]
READERS_ONLY = [Role.REVIEWER, Role.MANAGER]


@pytest.fixture
def versions(project: Project, lead: User) -> TwoVersions:
    return two_versions(project, lead)


@pytest.fixture
def experiment(project: Project, lead: User, versions: TwoVersions) -> Experiment:
    running = running_experiment(project, lead, versions, shadow=other_base(), shadow_share=0.1)
    logged(running, "control", requests=100, successes=40, scores=(1.0, 0.0))
    logged(running, "challenger", requests=100, successes=60, errors=3)
    return running


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/experiments/{tail}"


def create_body(versions: TwoVersions, **changes: Any) -> dict[str, Any]:
    return {
        "name": "summer test",
        "registered_model_id": versions.first.registered_model_id,
        "alias": "production",
        "success_event": SUCCESS,
        "arms": [
            {"name": "control", "model_version_id": versions.first.pk, "weight": 9},
            {"name": "challenger", "model_version_id": versions.second.pk},
        ],
        **changes,
    }


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_reads_the_list_and_the_results(
    project: Project, make_member: Callable[..., User], experiment: Experiment, role: Role
) -> None:
    client = logged_in(make_member(role))

    listing = client.get(reverse("experiments", args=[project.pk]))
    detail = client.get(reverse("experiment_page", args=[project.pk, experiment.pk]))

    assert listing.status_code == 200 and experiment.name in page_text(listing)
    assert detail.status_code == 200
    text = page_text(detail)
    assert "challenger wins: challenger beats control by 20.0 points" in text
    assert "40.0 % (95 % CI" in text and "60.0 % (95 % CI" in text
    assert "0.50 (95 % CI" in text  # control's two ratings, 1 and 0
    assert "unpriced" in text and "$0" not in text
    assert "3 % (3)" in text  # challenger's error rate
    html = detail.content.decode()
    may_manage = role in MANAGERS
    assert ('id="experiment-conclude"' in html) is may_manage
    assert ('id="experiment-stop"' in html) is may_manage


@pytest.mark.parametrize("role", list(Role))
def test_the_project_page_links_to_the_experiments(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    html = logged_in(make_member(role)).get(reverse("project_detail", args=[project.pk]))
    link = reverse("experiments", args=[project.pk])
    assert f'href="{link}" id="experiments-link"' in html.content.decode()


def test_conclude_on_the_page_shows_the_gates_refusal_then_promotes(
    project: Project, lead: User, versions: TwoVersions, experiment: Experiment
) -> None:
    client = logged_in(lead)
    conclude = reverse("experiment_act", args=[project.pk, experiment.pk, "conclude"])

    refused = client.post(conclude)

    assert refused.status_code == 409
    assert "No finished evaluation of" in page_text(refused)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING

    finished_evaluation(
        version=versions.second,
        against=versions.first,
        scores=[1.0] * 10,
        baseline_scores=[0.0] * 10,
        user=lead,
    )
    promoted = client.post(conclude, follow=True)
    assert promoted.status_code == 200
    assert f"Concluded: {versions.second} is in production now." in page_text(promoted)
    assert production_version(versions.first.registered_model) == versions.second


@pytest.mark.parametrize("role", READERS_ONLY)
def test_readers_cannot_act_on_the_page(
    project: Project, make_member: Callable[..., User], experiment: Experiment, role: Role
) -> None:
    client = logged_in(make_member(role))
    for action in ("start", "stop", "conclude"):
        response = client.post(reverse("experiment_act", args=[project.pk, experiment.pk, action]))
        assert response.status_code == 403
        assert "does not allow you to create, start, stop or conclude experiments" in page_text(
            response
        )
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING


def test_an_outsider_gets_404(project: Project, experiment: Experiment) -> None:
    client = logged_in(User.objects.create_user(username="stranger", password="pw"))
    responses = [
        client.get(reverse("experiments", args=[project.pk])),
        client.get(reverse("experiment_page", args=[project.pk, experiment.pk])),
        client.post(reverse("experiment_act", args=[project.pk, experiment.pk, "stop"])),
        token_client(User.objects.get(username="stranger")).get(api(project)),
    ]
    assert [r.status_code for r in responses] == [404, 404, 404, 404]


def test_names_are_escaped(project: Project, lead: User, versions: TwoVersions) -> None:
    response = token_client(lead).post(
        api(project),
        create_body(
            versions,
            name=XSS,
            arms=[
                {"name": XSS, "model_version_id": versions.first.pk},
                {"name": "b", "model_version_id": versions.second.pk},
            ],
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    experiment_id = response.json()["id"]
    client = logged_in(lead)
    for url in (
        reverse("experiments", args=[project.pk]),
        reverse("experiment_page", args=[project.pk, experiment_id]),
    ):
        html = client.get(url).content.decode()
        assert XSS not in html and XSS_ESCAPED in html


# --- API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGERS)
def test_a_lead_or_admin_creates_starts_and_stops_through_the_api(
    project: Project, make_member: Callable[..., User], versions: TwoVersions, role: Role
) -> None:
    client = token_client(make_member(role))

    created = client.post(api(project), create_body(versions), format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "draft"
    assert [(a["name"], a["weight"], a["shadow"]) for a in body["arms"]] == [
        ("control", 9, False),
        ("challenger", 1, False),
    ]
    started = client.post(api(project, f"{body['id']}/start/"), format="json")
    assert started.status_code == 200 and started.json()["status"] == "running"
    detail = client.get(api(project, f"{body['id']}/")).json()
    assert [r["requests"] for r in detail["results"]] == [0, 0]
    assert detail["verdict"]["winner_arm_id"] is None
    assert detail["verdict"]["sentence"].startswith("Not enough evidence yet")
    stopped = client.post(api(project, f"{body['id']}/stop/"), format="json")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"


def test_the_api_answers_each_arms_figures(
    project: Project, lead: User, experiment: Experiment
) -> None:
    detail = token_client(lead).get(api(project, f"{experiment.pk}/")).json()
    results = {r["arm"]: r for r in detail["results"]}
    assert results["control"]["requests"] == 100 and results["control"]["successes"] == 40
    assert results["control"]["success_rate"]["value"] == pytest.approx(0.4)
    assert (
        results["control"]["success_rate"]["low"] < 0.4 < results["control"]["success_rate"]["high"]
    )
    assert results["control"]["feedback_score"]["value"] == pytest.approx(0.5)
    assert results["control"]["cost_per_1000_usd"] is None
    assert results["challenger"]["error_rate"] == pytest.approx(0.03)
    assert results["challenger"]["feedback_score"] is None
    assert results["shadow"]["shadow"] is True and results["shadow"]["requests"] == 0
    winner = experiment.arms.get(name="challenger")
    assert detail["verdict"]["winner_arm_id"] == winner.pk


@pytest.mark.parametrize("role", READERS_ONLY)
def test_readers_read_but_cannot_manage_through_the_api(
    project: Project,
    make_member: Callable[..., User],
    versions: TwoVersions,
    experiment: Experiment,
    role: Role,
) -> None:
    client = token_client(make_member(role))
    assert client.get(api(project)).status_code == 200
    assert client.get(api(project, f"{experiment.pk}/")).status_code == 200
    refused = [
        client.post(api(project), create_body(versions, name="mine"), format="json"),
        client.post(api(project, f"{experiment.pk}/stop/"), format="json"),
        client.post(api(project, f"{experiment.pk}/conclude/"), format="json"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert Experiment.objects.count() == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"arms": [{"name": "one", "model_version_id": 1}]}, "arms"),
        ({"shadow_share": 1.5}, "shadow_share"),
        ({"alias": ""}, "alias"),
        ({"success_event": ""}, "success_event"),
        ({"registered_model_id": 999999}, None),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    project: Project,
    lead: User,
    versions: TwoVersions,
    changes: dict[str, Any],
    field: str | None,
) -> None:
    response = token_client(lead).post(
        api(project), create_body(versions, **changes), format="json"
    )
    if field is None:
        assert response.status_code == 404
    else:
        assert response.status_code == 400, response.content
        assert field in response.json()["error"]["fields"]
    assert not Experiment.objects.exists()


def test_conclude_through_the_api_answers_the_refusals_as_409(
    project: Project, lead: User, versions: TwoVersions, experiment: Experiment
) -> None:
    client = token_client(lead)
    refused = client.post(api(project, f"{experiment.pk}/conclude/"), format="json")
    assert refused.status_code == 409
    assert "No finished evaluation of" in refused.json()["error"]["message"]
    finished_evaluation(
        version=versions.second,
        against=versions.first,
        scores=[1.0] * 10,
        baseline_scores=[0.0] * 10,
        user=lead,
    )
    concluded = client.post(api(project, f"{experiment.pk}/conclude/"), format="json")
    assert concluded.status_code == 200, concluded.content
    assert concluded.json()["status"] == "concluded"
    assert concluded.json()["promoted_version_id"] == versions.second.pk
