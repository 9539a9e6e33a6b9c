"""The registry through the JSON API: the model list with its lineage and what production
serves, a version with its evaluations and alias history, promote and roll back with the gate
refusing what no evaluation shows to be no worse, unless an admin overrides it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import AliasChange, ModelVersion
from tests.api.builders import World, api, frozen_version, register_model_version, token_client
from tests.api.fixtures import api_world_fixture, lead_client_fixture  # noqa: F401
from tests.factories import finished_evaluation

pytestmark = pytest.mark.django_db


def test_the_model_list_shows_lineage_and_what_production_serves(
    client: APIClient, project: Project, world: World
) -> None:
    models = client.get(api(project, "models/")).json()["results"]

    assert len(models) == 1
    model = models[0]
    assert model["production_version"] == {"id": world.second.pk, "number": 2}
    newest = model["versions"][0]
    assert newest["number"] == 2
    assert newest["dataset_version"] == {
        "id": world.version.pk,
        "number": 1,
        "dataset": world.dataset.pk,
        "dataset_name": "tickets",
        "content_hash": world.version.content_hash,
    }
    assert newest["base_model"] == "smollm2-135m-instruct"
    assert newest["training_job"] == world.second.training_job_id
    assert newest["hyperparameters"]["epochs"] == 3
    # The adapter's name, never where it lies on the server's disk.
    assert newest["adapter_dir"] == f"job-{world.second.training_job_id}"
    assert newest["checkpoint_step"] is None
    assert (newest["final_train_loss"], newest["final_val_loss"]) == (0.9, 1.1)


def test_a_version_answers_with_its_lineage_evaluations_and_alias_history(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.get(api(project, f"model-versions/{world.second.pk}/"))

    assert response.status_code == 200
    version = response.json()
    assert (version["number"], version["registered_model"]) == (2, world.registered_model.pk)
    assert version["adapter_dir"] == f"job-{world.second.training_job_id}"
    assert version["training_job"] == world.second.training_job_id
    # Newest first: the one where the first version beat it, then the one it was promoted on;
    # the world's queued evaluation has not finished.
    gate_run, later_run = world.gate_runs[1:]
    assert [(e["eval_run"], e["metric"], e["value"]) for e in version["evaluations"]] == [
        (later_run.pk, "exact match", 0.0),
        (gate_run.pk, "exact match", 1.0),
    ]
    [promotion] = version["alias_history"]
    assert promotion["to_version"] == {"id": world.second.pk, "number": 2}
    assert promotion["evidence"]["eval_run_id"] == gate_run.pk
    assert promotion["reason"] == "beat it on every item"


def test_promote_promote_rollback_and_a_second_rollback_conflicts(
    project: Project,
    client: APIClient,
    lead: User,
    base_model: BaseModel,
) -> None:
    frozen = DatasetVersion.objects.get(pk=frozen_version(client, project)["id"])
    v1 = register_model_version(version=frozen, base_model=base_model, user=lead, model_name="m")
    v2 = register_model_version(version=frozen, base_model=base_model, user=lead, model_name="m")
    model_id = v1.registered_model_id
    items = frozen.items.count()
    right, wrong = [1.0] * items, [0.0] * items
    finished_evaluation(version=v1, against=None, scores=right, baseline_scores=wrong, user=lead)
    finished_evaluation(version=v2, against=v1, scores=right, baseline_scores=wrong, user=lead)

    promote_1 = client.post(
        api(project, f"model-versions/{v1.pk}/promote/"),
        {"reason": "first", "expected_current_version": "none"},
    )
    promote_2 = client.post(
        api(project, f"model-versions/{v2.pk}/promote/"),
        {"reason": "better", "expected_current_version": 1},
    )
    rollback = client.post(
        api(project, f"models/{model_id}/rollback/"),
        {"reason": "drift", "expected_current_version": 2, "target_version": 1},
    )
    rollback_again = client.post(
        api(project, f"models/{model_id}/rollback/"),
        {"reason": "more", "expected_current_version": 1, "target_version": 1},
    )

    assert [promote_1.status_code, promote_2.status_code, rollback.status_code] == [200] * 3
    assert rollback.json()["to_version"] == {"id": v1.pk, "number": 1}
    assert rollback.json()["from_version"] == {"id": v2.pk, "number": 2}
    assert rollback_again.status_code == 409
    assert "roll back" in rollback_again.json()["error"]["message"]
    history = client.get(api(project, f"models/{model_id}/history/")).json()["results"]
    assert [(h["kind"], h["reason"], h["changed_by"]) for h in history] == [
        ("rollback", "drift", lead.username),
        ("promote", "better", lead.username),
        ("promote", "first", lead.username),
    ]
    assert history[-1]["from_version"] is None
    assert AliasChange.objects.count() == 3
    model = client.get(api(project, f"models/{model_id}/")).json()
    assert model["production_version"] == {"id": v1.pk, "number": 1}


def test_promoting_the_version_already_in_production_is_a_conflict(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.post(
        api(project, f"model-versions/{world.second.pk}/promote/"),
        {"reason": "again", "expected_current_version": 2},
    )
    assert response.status_code == 409


@pytest.fixture
def unevaluated(world: World, base_model: BaseModel, lead: User) -> ModelVersion:
    """A third version of the world's model, never evaluated (production serves the second)."""
    return register_model_version(
        version=world.version, base_model=base_model, user=lead, model_name="triage"
    )


def test_promoting_a_version_never_evaluated_against_production_is_a_409_naming_what_is_missing(
    client: APIClient, project: Project, world: World, unevaluated: ModelVersion
) -> None:
    response = client.post(
        api(project, f"model-versions/{unevaluated.pk}/promote/"),
        {"reason": "new", "expected_current_version": 2},
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["message"].startswith(
        "No finished evaluation of triage v3 against production triage v2 on the same test set"
    )
    assert error["evidence"]["eval_run_id"] is None
    assert AliasChange.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expected_current_version": 2}, "reason"),
        ({"reason": "", "expected_current_version": 2}, "reason"),
        ({"reason": "x", "margin": -1, "expected_current_version": 2}, "margin"),
        ({"reason": "x"}, "expected_current_version"),
        ({"reason": "x", "expected_current_version": "two"}, "expected_current_version"),
    ],
    ids=["no-reason", "blank-reason", "negative-margin", "no-current", "bad-current"],
)
def test_promote_and_rollback_refuse_a_missing_reason_or_a_bad_margin_with_a_400(
    client: APIClient, project: Project, world: World, body: dict[str, Any], field: str
) -> None:
    promote = client.post(api(project, f"model-versions/{world.first.pk}/promote/"), body)

    assert promote.status_code == 400
    assert field in promote.json()["error"]["fields"]
    if field != "margin":
        rollback = client.post(
            api(project, f"models/{world.registered_model.pk}/rollback/"),
            {**body, "target_version": 1},
        )
        assert rollback.status_code == 400
        assert field in rollback.json()["error"]["fields"]
    assert AliasChange.objects.count() == 2


def test_a_worse_version_is_refused_within_any_margin_unless_an_admin_overrides_it(
    client: APIClient,
    project: Project,
    world: World,
    unevaluated: ModelVersion,
    lead: User,
    make_member: Callable[..., User],
) -> None:
    items = world.version.items.count()
    run = finished_evaluation(
        version=unevaluated,
        against=world.second,
        scores=[0.0] * items,
        baseline_scores=[1.0] * items,
        user=lead,
    )
    url = api(project, f"model-versions/{unevaluated.pk}/promote/")

    seen = {"expected_current_version": 2}
    refused = client.post(url, {"reason": "cheaper", "margin": 50, **seen}, format="json")
    lead_override = client.post(url, {"reason": "cheaper", "override": True, **seen}, format="json")
    admin = token_client(make_member(Role.ADMIN))
    overridden = admin.post(
        url, {"reason": "provider outage", "override": True, **seen}, format="json"
    )

    assert refused.status_code == 409
    # Every item lost, but on this handful of items McNemar's p stays above 0.05, so the one
    # rule calls the loss borderline rather than worse: the interval's worse end (-100 points)
    # is what keeps it out at any margin the lead may set (at most 50).
    assert items < 6
    assert refused.json()["error"]["evidence"]["verdict"] == "not shown to be no worse"
    assert "Borderline" in refused.json()["error"]["evidence"]["sentence"]
    assert lead_override.status_code == 403
    assert overridden.status_code == 200, overridden.content
    change = overridden.json()
    assert change["overridden"] is True
    assert change["reason"] == "provider outage"
    assert change["evidence"]["eval_run_id"] == run.pk
    assert change["evidence"]["verdict"] == "not shown to be no worse"
    assert (change["evidence"]["candidate_score"], change["evidence"]["baseline_score"]) == (
        0.0,
        1.0,
    )
    history_url = api(project, f"models/{world.registered_model.pk}/history/")
    history = client.get(history_url).json()["results"]
    assert history[0]["overridden"] is True and history[1]["overridden"] is False
    # The world's own promotion won every one of its handful of items: borderline by the one
    # rule (McNemar p >= 0.05), so it passed by the margin, not as "better".
    assert history[1]["evidence"]["verdict"] == "no worse than the margin"
