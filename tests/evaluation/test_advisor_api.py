"""The advisor through the API: GET evaluations/<run>/advice/ answers what the advisor's page
shows (the table, the break-even, the pitfalls, the recommendation) as JSON, for the same
volume and horizon, validated with errors that name the parameter; what it answers holds to its
documented schema; every member reads it and nobody else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from schemathesis.specs.openapi.checks import response_schema_conformance

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from evaluation.advice import run_advice
from evaluation.advisor import Advice, AdviceRow, BreakEven
from evaluation.models import CandidateKind, EvalRun
from evaluation.services import CandidateSpec
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import api, token_client
from tests.evaluation.finished_runs import fine_tuned_against_five_shot, finished_run
from tests.factories import frozen_version

pytestmark = pytest.mark.django_db

ADVICE_PATH = "/api/projects/{project_id}/evaluations/{run_id}/advice/"


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def big_version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=130)  # 104 training examples, 26 validation


@pytest.fixture
def run(big_version: DatasetVersion, lead: User, base_model: BaseModel) -> EvalRun:
    return fine_tuned_against_five_shot(big_version, lead, base_model, tuned=26, shot=5)


def advice_url(run: EvalRun) -> str:
    return api(run.dataset_version.dataset.project, f"evaluations/{run.pk}/advice/")


def test_the_api_answers_the_advisors_figures_for_the_volume_and_horizon_asked(
    run: EvalRun, lead: User
) -> None:
    response = token_client(lead).get(
        advice_url(run), {"monthly_requests": "5000", "horizon_months": "6"}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    expected = run_advice(run, monthly_requests=5000, horizon_months=6)
    assert body["available"] is True and body["reason"] == ""
    assert (body["monthly_requests"], body["horizon_months"]) == (5000, 6)
    assert body["fine_tuned"] == {"id": expected.fine_tuned.pk, "name": expected.fine_tuned.label}
    assert body["metric"] == expected.metric and body["metric_label"] == expected.metric_label
    advice = body["advice"]
    assert advice["recommendation"] == expected.advice.recommendation
    assert advice["recommendation"].startswith("Fine-tune")
    assert advice["pitfall_codes"] == list(expected.advice.pitfall_codes)
    assert [row["name"] for row in advice["rows"]] == [row.name for row in expected.advice.rows]
    tuned, shot = advice["rows"]
    assert tuned["break_even"] is None and tuned["option"]["is_fine_tuned"] is True
    assert shot["quality"] == pytest.approx(5 / 26)
    # Money stays exact: a decimal string, the same as the advisor's Decimal.
    expected_shot = expected.advice.rows[1]
    assert Decimal(shot["monthly_cost"]) == expected_shot.monthly_cost
    assert expected_shot.break_even is not None
    assert shot["break_even"]["status"] == expected_shot.break_even.status
    assert Decimal(shot["break_even"]["savings_per_request"]) == (
        expected_shot.break_even.savings_per_request
    )
    assert shot["payback"] == expected_shot.payback
    # The verdict behind the row: the rule's outcome and the interval of fine-tuned minus it.
    assert shot["option"]["vs_fine_tuned"]["outcome"] == "better"
    assert shot["option"]["vs_fine_tuned"]["comparison"]["ci_low"] > 0


def test_every_field_the_advisor_computes_is_in_the_answer(run: EvalRun, lead: User) -> None:
    # Generic on purpose: a field added to the advisor's dataclasses appears without an edit
    # to the API, so this reads the dataclasses rather than a list written here.
    advice = token_client(lead).get(advice_url(run)).json()["advice"]

    assert {field.name for field in fields(Advice)} <= set(advice)
    row = advice["rows"][1]
    assert {field.name for field in fields(AdviceRow)} <= set(row)
    assert {field.name for field in fields(BreakEven)} <= set(row["break_even"])
    assert {"payback", "pays_back_within_horizon"} <= set(row) | set(row["break_even"])


def test_the_volume_defaults_to_the_pages_and_the_fine_tuned_candidate_can_be_chosen(
    run: EvalRun, lead: User
) -> None:
    tuned = run.candidates.get(kind=CandidateKind.MODEL_VERSION)

    body = token_client(lead).get(advice_url(run), {"fine_tuned": str(tuned.pk)}).json()

    assert (body["monthly_requests"], body["horizon_months"]) == (100_000, 12)
    assert body["fine_tuned"]["id"] == tuned.pk


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"monthly_requests": "lots"}, "monthly_requests"),
        ({"monthly_requests": "0"}, "monthly_requests"),
        ({"monthly_requests": str(10**10 + 1)}, "monthly_requests"),
        ({"horizon_months": "121"}, "horizon_months"),
        ({"horizon_months": ""}, "horizon_months"),
        ({"fine_tuned": "x"}, "fine_tuned"),
        ({"metrc": "exact_match"}, "metrc"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(
    run: EvalRun, lead: User, query: dict[str, str], field: str
) -> None:
    response = token_client(lead).get(advice_url(run), query)

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_a_candidate_that_is_not_fine_tuned_cannot_be_weighed_as_the_fine_tune(
    run: EvalRun, lead: User
) -> None:
    prompted = run.candidates.get(kind=CandidateKind.BASE)

    response = token_client(lead).get(advice_url(run), {"fine_tuned": str(prompted.pk)})

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["fine_tuned"] == [
        f"No fine-tuned candidate {prompted.pk} in this evaluation."
    ]


def test_a_run_the_advisor_cannot_answer_says_why(
    big_version: DatasetVersion, lead: User, base_model: BaseModel
) -> None:
    run = finished_run(
        version=big_version,
        user=lead,
        answers=[(CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [True])],
    )

    body = token_client(lead).get(advice_url(run)).json()

    assert body["available"] is False and body["advice"] is None
    assert "no fine-tuned candidate" in body["reason"]


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
def test_every_member_reads_the_advice(
    run: EvalRun, make_member: Callable[..., User], role: Role
) -> None:
    assert token_client(make_member(role)).get(advice_url(run)).status_code == 200


def test_an_outsider_is_told_nothing(run: EvalRun, make_member: Callable[..., User]) -> None:
    outsider = make_member(Role.ADMIN, target=Project.objects.create(name="other"))

    response = token_client(outsider).get(advice_url(run))

    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not found."}}


@pytest.fixture
def in_process_wsgi() -> Iterator[WSGIHandler]:
    """The real WSGI app in this test's transaction (as tests/api/test_schemathesis.py)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def test_a_full_answer_holds_to_the_documented_schema(
    run: EvalRun, lead: User, in_process_wsgi: WSGIHandler
) -> None:
    # The schemathesis walk meets only runs without advice; this checks a full answer.
    headers = {"Authorization": token_client(lead)._credentials["HTTP_AUTHORIZATION"]}  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", in_process_wsgi, headers=headers
    )
    operation = schema[ADVICE_PATH]["GET"]
    project = run.dataset_version.dataset.project
    case: Any = operation.Case(
        path_parameters={"project_id": project.pk, "run_id": run.pk},
        query={"monthly_requests": 5000},
    )

    response = case.call(app=in_process_wsgi, headers=headers)

    assert response.status_code == 200
    assert response.json()["advice"]["rows"]
    case.validate_response(response, checks=[response_schema_conformance], headers=headers)
    parameters = {parameter["name"] for parameter in operation.definition.raw["parameters"]}
    assert {"monthly_requests", "horizon_months", "fine_tuned"} <= parameters
