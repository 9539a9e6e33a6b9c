"""A strict API: every endpoint found in the OpenAPI schema refuses keys it does not know, every
list answers one page shape, and bulk actions confirm the count they act on.

The walks read the schema rather than a list written here, so an endpoint added later is
checked without anyone remembering to add it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from datasets.models import AnalysisRun, Example, ExampleStatus
from ftportal.roles import Role
from serving.services import ArmSpec, application_key_create, experiment_create
from training.models import TrainingSearch

from .builders import (
    World,
    token_client,
    world_alert_rule,
    world_budget_alert,
    world_fallback_route,
    world_monitoring_alert,
    world_retrain_proposal,
)
from .test_roles import db_state

pytestmark = pytest.mark.django_db

UNKNOWN = "surprise_key"
WRITE_METHODS = ("post", "put", "patch", "delete")
PAGE_KEYS = {"count", "next", "previous", "results"}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def components() -> dict[str, Any]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return dict(schema["components"]["schemas"])


WRITES = [(path, method, op) for path, method, op in operations() if method in WRITE_METHODS]
READS = [(path, method, op) for path, method, op in operations() if method == "get"]


def operation_id(case: tuple[str, str, dict[str, Any]]) -> str:
    return f"{case[1].upper()} {case[0]}"


@pytest.fixture
def ids(world: World, make_member: Callable[..., User]) -> dict[str, int | str]:
    """An object of the project for each kind of id a URL names, keyed by the segment before."""
    analysis = AnalysisRun.objects.create(
        dataset=world.dataset, base_model_key="smollm2-135m-instruct", created_by=world.owner
    )
    return {
        "projects/project_id": world.project.pk,
        "datasets/dataset_id": world.dataset.pk,
        "examples/example_id": world.pending.pk,
        "dataset-versions/version_id": world.version.pk,
        "model-versions/version_id": world.first.pk,
        "imports/batch_id": world.dataset.imports.get().pk,
        "analyses/run_id": analysis.pk,
        "evaluations/run_id": world.eval_run.pk,
        "results/result_id": world.eval_result.pk,
        "training-jobs/job_id": world.queued_job.pk,
        # A running search with no trial started yet: enough to read and cancel, no training.
        "training-searches/search_id": TrainingSearch.objects.create(
            project=world.project,
            dataset_version=world.version,
            base_model=world.queued_job.base_model,
            model_name="strict",
            budget_minutes=30,
            trial_settings=[{}, {"learning_rate": 1e-4}],
            created_by=world.owner,
        ).pk,
        "checkpoints/step": 2,
        "models/model_id": world.registered_model.pk,
        "members/user_id": make_member(Role.REVIEWER).pk,
        "app-keys/key_id": application_key_create(
            project=world.project, user=world.owner, name="strict"
        ).key.pk,
        "experiments/experiment_id": experiment_create(
            project=world.project,
            user=world.owner,
            name="strict",
            registered_model=world.registered_model,
            alias="production",
            success_event="resolved",
            arms=[
                ArmSpec(name="first", model_version_id=world.first.pk),
                ArmSpec(name="second", model_version_id=world.second.pk),
            ],
        ).pk,
        "fallback-routes/route_id": world_fallback_route(world).pk,
        "budget/alerts/alert_id": world_budget_alert(world).pk,
        "alerts/alert_id": world_monitoring_alert(world).pk,
        "alert-rules/rule_id": world_alert_rule(world).pk,
        "retraining/proposal_id": world_retrain_proposal(world).pk,
        "production/model_id": world.registered_model.pk,
        "{model_id}/alias": "production",
    }


def concrete(path: str, ids: dict[str, int | str]) -> str:
    def fill(match: re.Match[str]) -> str:
        before = path[: match.start()].rstrip("/").rsplit("/", 2)
        # Two segments first where one is not enough ("budget/alerts" and "alerts" name
        # different alerts), then the segment before the parameter.
        key = f"{'/'.join(before[-2:])}/{match.group(1)}"
        if key not in ids:
            key = f"{before[-1]}/{match.group(1)}"
        if key not in ids:
            pytest.fail(f"{path}: no object for {key}; add one to the ids fixture")
        return str(ids[key])

    return re.sub(r"\{(\w+)\}", fill, path)


@pytest.fixture
def admin(make_member: Callable[..., User]) -> APIClient:
    """May do everything, so what answers is the input check, not the role check: creating
    projects included, a right of the site's (ftportal.permissions.may_create_projects)."""
    user = make_member(Role.ADMIN)
    user.user_permissions.add(Permission.objects.get(codename="add_project"))
    return token_client(user)


def test_the_walk_finds_the_endpoints_it_is_meant_to_check() -> None:
    # A guard on the walk itself: if the schema stopped listing views, the tests below would
    # pass while checking nothing.
    assert len(WRITES) >= 20
    assert len(READS) >= 25


@pytest.mark.parametrize("case", WRITES, ids=operation_id)
def test_every_write_endpoint_refuses_an_unknown_key_by_name(
    case: tuple[str, str, dict[str, Any]], ids: dict[str, int | str], admin: APIClient
) -> None:
    path, method, operation = case
    content = operation.get("requestBody", {}).get("content", {"application/json": {}})
    before = db_state()

    send = getattr(admin, method)
    if "application/json" in content:
        response = send(concrete(path, ids), {UNKNOWN: 1}, format="json")
    else:
        response = send(concrete(path, ids), {UNKNOWN: "1"}, format="multipart")

    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert UNKNOWN in fields
    assert f"Unknown field '{UNKNOWN}'" in fields[UNKNOWN][0]
    assert db_state() == before


def test_no_get_endpoint_answers_a_bare_list() -> None:
    bare = [
        operation_id((path, method, op))
        for path, method, op in READS
        if op["responses"]
        .get("200", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("type")
        == "array"
    ]
    assert bare == []


def page_component(operation: dict[str, Any]) -> str | None:
    schema = (
        operation["responses"]
        .get("200", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


LISTS = [
    (path, method, op)
    for path, method, op in READS
    if (name := page_component(op)) and set(components()[name]["properties"]) == PAGE_KEYS
]


def test_the_lists_are_found() -> None:
    assert len(LISTS) >= 14


@pytest.mark.parametrize("case", READS, ids=operation_id)
def test_every_get_endpoint_that_lists_answers_one_page_shape(
    case: tuple[str, str, dict[str, Any]], ids: dict[str, int | str], admin: APIClient
) -> None:
    path, _, _ = case
    response = admin.get(concrete(path, ids))
    assert response.status_code == 200, response.content
    if response["Content-Type"].split(";")[0] != "application/json":
        return  # the export streams a file
    body = response.json()
    assert not isinstance(body, list), f"{path} answers a bare list; page it (ListPagination)"
    if case in LISTS:
        assert set(body) == PAGE_KEYS
        assert body["count"] == len(body["results"]) or body["next"] is not None


@pytest.mark.parametrize("case", LISTS, ids=operation_id)
def test_every_list_pages_by_limit_and_refuses_an_unknown_query_key(
    case: tuple[str, str, dict[str, Any]], ids: dict[str, int | str], admin: APIClient
) -> None:
    url = concrete(case[0], ids)
    one = admin.get(url, {"limit": 1}).json()
    assert len(one["results"]) <= 1
    assert (one["next"] is not None) == (one["count"] > 1)

    refused = admin.get(url, {UNKNOWN: "x"})
    assert refused.status_code == 400, refused.content
    assert UNKNOWN in refused.json()["error"]["fields"]


# --- bulk actions -------------------------------------------------------------------------------


def bulk_url(world: World) -> str:
    return f"/api/projects/{world.project.pk}/datasets/{world.dataset.pk}/review-bulk/"


def pending(world: World) -> list[int]:
    return sorted(
        world.dataset.examples.filter(status=ExampleStatus.PENDING).values_list("pk", flat=True)
    )


def test_a_misspelt_filter_is_refused_by_name_and_approves_nothing(
    world: World, admin: APIClient
) -> None:
    # Observed: "filters" for "filter" approved every pending example, personal data included.
    waiting = pending(world)
    assert len(waiting) >= 2

    response = admin.post(
        bulk_url(world),
        {"action": "approve", "filters": {"finding": "pii"}, "expected_count": len(waiting)},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert "filters" in response.json()["error"]["fields"]
    assert pending(world) == waiting


def test_an_unknown_key_inside_the_filter_is_refused_with_its_path(
    world: World, admin: APIClient
) -> None:
    waiting = pending(world)
    response = admin.post(
        bulk_url(world),
        {"action": "approve", "filter": {"stauts": "pending"}, "expected_count": 1},
        format="json",
    )
    assert response.status_code == 400
    assert "stauts" in response.json()["error"]["fields"]["filter"]
    assert pending(world) == waiting


@pytest.mark.parametrize("given", [None, 0, 1, 99], ids=lambda g: f"expected_count={g}")
def test_a_bulk_action_without_the_right_count_says_how_many_and_changes_nothing(
    world: World, admin: APIClient, given: int | None
) -> None:
    waiting = pending(world)
    body: dict[str, Any] = {"action": "approve"}
    if given is not None:
        body["expected_count"] = given
    if given == len(waiting):
        pytest.skip("that is the right count")

    response = admin.post(bulk_url(world), body, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "expected_count"
    assert error["count"] == len(waiting)
    assert f"would affect {len(waiting)} example(s)" in error["message"]
    assert pending(world) == waiting


def test_a_dry_run_tells_the_count_and_sending_it_back_acts(world: World, admin: APIClient) -> None:
    waiting = pending(world)
    dry = admin.post(bulk_url(world), {"action": "approve", "dry_run": True}, format="json")
    assert dry.json()["count"] == len(waiting)
    assert pending(world) == waiting

    done = admin.post(
        bulk_url(world),
        {
            "action": "approve",
            "expected_count": dry.json()["count"],
            "selection_token": dry.json()["selection_token"],
        },
        format="json",
    )

    assert done.status_code == 200, done.content
    assert done.json()["changed"] == len(waiting)
    assert set(Example.objects.filter(pk__in=waiting).values_list("status", flat=True)) == {
        ExampleStatus.APPROVED
    }
