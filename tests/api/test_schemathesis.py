"""Schemathesis fuzzes every API operation against the OpenAPI schema, in-process and bounded.

An ML lead of a project with one of everything (tests/api/builders.World) calls every operation
with data generated from the schema, valid and invalid, through the real WSGI application. Every
answer must be no server error, use a status code the operation documents, and have a body that
matches the documented schema; invalid input must be refused. The run is deterministic
(derandomized) and small (a few examples per operation), so it stays well inside the suite's
time. Nothing reaches a worker: the test's transaction is never committed, so no on_commit
dispatch runs, and any direct send to the broker is recorded (conftest.unsent_tasks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from datasets.models import ImportBatch
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

pytestmark = pytest.mark.django_db

# Per operation and generation mode; with ~60 operations this is a few hundred requests.
MAX_EXAMPLES = 4
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]
# Revoking the token the run calls with would leave every later operation untested.
EXCLUDED = {("DELETE", "/api/auth/token/")}


def auth_header(world: World) -> dict[str, str]:
    """The header an API user sends, made the way the other API tests make theirs."""
    client = token_client(world.owner)
    return {"Authorization": client._credentials["HTTP_AUTHORIZATION"]}  # type: ignore[attr-defined]


def path_ids(world: World, path: str) -> dict[str, Any]:
    """The seeded objects' ids for an operation's path parameters, so calls reach real rows."""
    ids: dict[str, Any] = {
        "project_id": world.project.pk,
        "dataset_id": world.dataset.pk,
        "example_id": world.pending.pk,
        "batch_id": ImportBatch.objects.filter(dataset=world.dataset).latest("pk").pk,
        "job_id": world.queued_job.pk,
        "step": 2,
        "checkpoint_id": world.queued_job.checkpoints.values_list("pk", flat=True)[0],
        "model_id": world.registered_model.pk,
        "result_id": world.eval_result.pk,
        "user_id": world.owner.pk,
        # Two kinds of object share these names; the path says which.
        "version_id": world.first.pk if "/model-versions/" in path else world.version.pk,
        "run_id": world.eval_run.pk,
    }
    if "{key_id}" in path:
        # An application key of the project, made for the operations that name one.
        key = world.project.application_keys.first() or (
            application_key_create(project=world.project, user=world.owner, name="fuzzed").key
        )
        ids["key_id"] = key.pk
    if "{experiment_id}" in path:
        # A draft experiment of the project, made for the operations that name one.
        experiment = world.project.experiments.first() or experiment_create(
            project=world.project,
            user=world.owner,
            name="fuzzed",
            registered_model=world.registered_model,
            alias="production",
            success_event="resolved",
            arms=[
                ArmSpec(name="first", model_version_id=world.first.pk),
                ArmSpec(name="second", model_version_id=world.second.pk),
            ],
        )
        ids["experiment_id"] = experiment.pk
    if "{route_id}" in path:
        # The production alias's fallback route (to the first version), made when first named.
        ids["route_id"] = world_fallback_route(world).pk
    if "{alert_id}" in path and "/budget/" in path:
        # A budget alert of the project (80 % of $10 this month), made when first named.
        ids["alert_id"] = world_budget_alert(world).pk
    elif "{alert_id}" in path:
        # An open alert of the project's alert list, made when first named.
        ids["alert_id"] = world_monitoring_alert(world).pk
    if "{rule_id}" in path:
        ids["rule_id"] = world_alert_rule(world).pk
    if "{alias}" in path:
        ids["alias"] = "production"
    if "{proposal_id}" in path:
        ids["proposal_id"] = world_retrain_proposal(world).pk
    if "{search_id}" in path:
        # A running search of the project with no trial started, made when first named.
        search = world.project.training_searches.first() or TrainingSearch.objects.create(
            project=world.project,
            dataset_version=world.version,
            base_model=world.queued_job.base_model,
            model_name="fuzzed",
            budget_minutes=30,
            trial_settings=[{}, {"learning_rate": 1e-4}],
            created_by=world.owner,
        )
        ids["search_id"] = search.pk
    return {name: value for name, value in ids.items() if "{" + name + "}" in path}


@pytest.fixture
def in_process_wsgi() -> Iterator[WSGIHandler]:
    """The real WSGI app, in this test's database transaction (as Django's test client does:
    closing "old" connections at each request would end the test's transaction)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def fuzz(
    operation: Any,
    mode: GenerationMode,
    *,
    world: World,
    app: WSGIHandler,
    headers: dict[str, str],
    statuses: list[int],
) -> list[str]:
    """Calls one operation with generated input; the failed checks, described."""
    checks = NEGATIVE_CHECKS if mode == GenerationMode.NEGATIVE else POSITIVE_CHECKS
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=path_ids(world, operation.path)
    )
    failures: list[str] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case: Any) -> None:
        response = case.call(app=app, headers=headers)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as failure:
            failures.append(
                f"{operation.label} [{mode.value}] -> {response.status_code}: "
                f"{str(failure).strip()[:800]}"
            )

    try:
        call()
    except Unsatisfiable:
        # Nothing in this operation's input can be made invalid (negative mode only).
        assert mode == GenerationMode.NEGATIVE, f"{operation.label}: no valid input generated"
    return failures


def test_every_operation_holds_to_its_schema_under_generated_input(
    world: World, in_process_wsgi: WSGIHandler
) -> None:
    headers = auth_header(world)
    # Through the WSGI app too: Django's test client would reconnect close_old_connections.
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", in_process_wsgi, headers=headers
    )
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0

    for result in schema.get_all_operations():
        # An operation schemathesis cannot read is a broken schema: fail with its error.
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if (operation.method.upper(), operation.path) in EXCLUDED:
                continue
            failures += fuzz(
                operation,
                mode,
                world=world,
                app=in_process_wsgi,
                headers=headers,
                statuses=statuses,
            )

    assert operations > 50
    assert not failures, "\n\n".join(failures)
    # Every call carried the lead's valid token: a 401 would mean the run lost it midway and
    # the rest of the operations were only refused, not exercised.
    assert 401 not in statuses
    assert sum(200 <= status < 300 for status in statuses) > 100
