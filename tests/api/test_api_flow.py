"""The whole loop through the JSON API, without the worker: import, review, freeze, export,
queue training, promote and roll back, queue an evaluation, read the results."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from catalog.models import BaseModel
from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    ImportBatch,
    ReviewDecision,
)
from evaluation.models import EvalResult, EvalRun, EvalStatus
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import AliasChange, ModelVersion
from tests.factories import finished_evaluation
from training.models import Checkpoint, JobStatus, TrainingJob, TrainingMetric

from .builders import (
    TICKETS,
    World,
    chat,
    jsonl,
    register_model_version,
    token_client,
    upload,
    valid_file,
)

pytestmark = pytest.mark.django_db


def api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/{tail}"


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def client(lead: User) -> APIClient:
    return token_client(lead)


def create_dataset(client: APIClient, project: Project, name: str = "tickets") -> dict[str, Any]:
    response = client.post(api(project, "datasets/"), {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def import_file(
    client: APIClient, project: Project, dataset_id: int, data: bytes, **extra: Any
) -> Any:
    return client.post(
        api(project, f"datasets/{dataset_id}/imports/"),
        {"file": upload(data), **extra},
        format="multipart",
    )


def review(client: APIClient, project: Project, example_id: int, **body: Any) -> Any:
    """A decision on the example as the client reads it now (its current revision)."""
    if "revision" not in body:
        seen = client.get(api(project, f"examples/{example_id}/")).json()
        body["revision"] = seen["revision"]
    return client.post(api(project, f"examples/{example_id}/review/"), body, format="json")


def approve_all(client: APIClient, project: Project, dataset_id: int) -> None:
    for example in Example.objects.filter(dataset_id=dataset_id):
        assert review(client, project, example.pk, action="approve").status_code == 200


def frozen_version(client: APIClient, project: Project, **body: Any) -> dict[str, Any]:
    dataset = create_dataset(client, project)
    assert import_file(client, project, dataset["id"], valid_file()).status_code == 201
    approve_all(client, project, dataset["id"])
    response = client.post(api(project, f"datasets/{dataset['id']}/versions/"), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- authentication -------------------------------------------------------------------------


def test_a_token_obtained_with_username_and_password_authenticates_api_calls(
    lead: User, project: Project
) -> None:
    anonymous = APIClient()
    response = anonymous.post(
        "/api/auth/token/", {"username": lead.username, "password": "pw"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]

    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    projects = anonymous.get("/api/projects/")

    assert projects.status_code == 200
    assert projects.json()["results"] == [
        {
            "id": project.pk,
            "name": project.name,
            "description": project.description,
            "created_at": projects.json()["results"][0]["created_at"],
            "role": "ml_lead",
        }
    ]


def test_a_wrong_password_gets_no_token(lead: User) -> None:
    response = APIClient().post(
        "/api/auth/token/", {"username": lead.username, "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert "token" not in response.json()


@pytest.mark.parametrize(
    "path", ["/api/projects/", "/api/projects/{project}/", "/api/projects/{project}/datasets/"]
)
def test_requests_without_credentials_are_refused_with_the_error_shape(
    project: Project, path: str
) -> None:
    response = APIClient().get(path.format(project=project.pk))
    assert response.status_code == 401
    assert response.json()["error"]["message"]


def test_a_bad_token_is_refused(project: Project) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/projects/").status_code == 401


def test_the_project_list_shows_only_my_projects_with_my_role(
    client: APIClient, project: Project, lead: User
) -> None:
    Project.objects.create(name="Someone else's")
    response = client.get("/api/projects/")
    assert [(p["name"], p["role"]) for p in response.json()["results"]] == [
        (project.name, "ml_lead")
    ]

    detail = client.get(api(project))
    assert detail.status_code == 200
    assert detail.json()["role"] == "ml_lead"


# --- datasets and import --------------------------------------------------------------------


def test_a_dataset_is_created_and_a_valid_file_imported(
    client: APIClient, project: Project, lead: User
) -> None:
    dataset = create_dataset(client, project)

    response = import_file(client, project, dataset["id"], valid_file())

    assert response.status_code == 201
    body = response.json()
    assert body["imported_count"] == len(TICKETS)
    assert body["line_count"] == len(TICKETS)
    assert body["errors"] == []
    batch = ImportBatch.objects.get(pk=body["id"])
    assert batch.uploaded_by == lead
    assert batch.examples.count() == len(TICKETS)
    listing = client.get(api(project, "datasets/")).json()["results"]
    assert listing[0]["pending_count"] == len(TICKETS)


def test_a_second_dataset_with_the_same_name_is_a_conflict(
    client: APIClient, project: Project
) -> None:
    create_dataset(client, project, "tickets")
    response = client.post(api(project, "datasets/"), {"name": "tickets"}, format="json")
    assert response.status_code == 409
    assert Dataset.objects.filter(project=project).count() == 1


BROKEN_FILE = jsonl(
    chat("Printer jammed", "hardware"),
    {"messages": [{"role": "user", "content": "No answer here"}]},
    chat("VPN is down", "network"),
    {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
)


def test_a_file_with_errors_is_rejected_whole_with_every_line_error(
    client: APIClient, project: Project
) -> None:
    dataset = create_dataset(client, project)

    response = import_file(client, project, dataset["id"], BROKEN_FILE)

    assert response.status_code == 400
    error = response.json()["error"]
    assert "nothing was imported" in error["message"]
    assert {(e["line"], e["field"]) for e in error["errors"]} == {
        (2, "messages[0].role"),
        (4, "messages[0].role"),
    }
    assert all(e["message"] for e in error["errors"])
    assert not Example.objects.exists()
    assert not ImportBatch.objects.exists()


def test_valid_lines_only_imports_the_valid_lines_and_reports_the_rest(
    client: APIClient, project: Project
) -> None:
    dataset = create_dataset(client, project)

    response = import_file(client, project, dataset["id"], BROKEN_FILE, valid_lines_only="true")

    assert response.status_code == 201
    body = response.json()
    assert body["imported_count"] == 2
    assert body["line_count"] == 4
    assert [e["line"] for e in body["errors"]] == [2, 4]
    stored = Example.objects.filter(dataset_id=dataset["id"]).order_by("source_line")
    assert [e.source_line for e in stored] == [1, 3]


def test_an_import_without_a_file_names_the_field(client: APIClient, project: Project) -> None:
    dataset = create_dataset(client, project)
    response = client.post(api(project, f"datasets/{dataset['id']}/imports/"), {})
    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]


# --- examples and review --------------------------------------------------------------------


def test_examples_are_listed_by_status_one_page_at_a_time(
    client: APIClient, project: Project
) -> None:
    dataset = create_dataset(client, project)
    import_file(client, project, dataset["id"], valid_file())
    first = Example.objects.order_by("id").first()
    assert first is not None
    review(client, project, first.pk, action="approve")
    url = api(project, f"datasets/{dataset['id']}/examples/")

    pending = client.get(url, {"status": "pending", "limit": "2"}).json()
    approved = client.get(url, {"status": "approved"}).json()
    second_page = client.get(url, {"status": "pending", "limit": "2", "offset": "2"}).json()

    assert pending["count"] == len(TICKETS) - 1
    assert len(pending["results"]) == 2
    assert pending["next"] is not None
    assert [e["id"] for e in approved["results"]] == [first.pk]
    assert {e["id"] for e in second_page["results"]}.isdisjoint(
        {e["id"] for e in pending["results"]}
    )
    assert client.get(url, {"status": "maybe"}).status_code == 400


def test_review_decisions_are_stored_with_the_reviewer(
    project: Project, make_member: Callable[..., User], client: APIClient
) -> None:
    dataset = create_dataset(client, project)
    import_file(client, project, dataset["id"], valid_file(3))
    one, two, three = Example.objects.order_by("id")
    reviewer = make_member(Role.REVIEWER)
    reviewer_client = token_client(reviewer)

    approved = review(reviewer_client, project, one.pk, action="approve", comment="fine")
    rejected = review(reviewer_client, project, two.pk, action="reject")
    edited = review(reviewer_client, project, three.pk, action="edit", answer="  account  ")

    assert approved.status_code == rejected.status_code == edited.status_code == 200
    assert approved.json()["status"] == "approved"
    assert rejected.json()["status"] == "rejected"
    assert edited.json()["status"] == "approved"
    assert edited.json()["messages"][-1]["content"] == "account"
    decision = edited.json()["decisions"][0]
    assert decision["action"] == "edit"
    assert decision["previous_answer"] == TICKETS[2][1]
    assert decision["new_answer"] == "account"
    assert decision["reviewer"] == reviewer.username
    stored = ReviewDecision.objects.order_by("id")
    assert [(d.example_id, d.action, d.reviewer) for d in stored] == [
        (one.pk, "approve", reviewer),
        (two.pk, "reject", reviewer),
        (three.pk, "edit", reviewer),
    ]
    detail = reviewer_client.get(api(project, f"examples/{one.pk}/")).json()
    assert detail["decisions"][0]["comment"] == "fine"


def test_an_edit_without_an_answer_changes_nothing(client: APIClient, project: Project) -> None:
    dataset = create_dataset(client, project)
    import_file(client, project, dataset["id"], valid_file(1))
    example = Example.objects.get()

    response = review(client, project, example.pk, action="edit", answer="   ")

    assert response.status_code == 400
    example.refresh_from_db()
    assert example.status == ExampleStatus.PENDING
    assert not ReviewDecision.objects.exists()


def test_a_review_that_breaks_the_state_machine_is_a_conflict(
    client: APIClient, project: Project
) -> None:
    dataset = create_dataset(client, project)
    import_file(client, project, dataset["id"], valid_file(1))
    example = Example.objects.get()
    review(client, project, example.pk, action="reject")

    response = review(client, project, example.pk, action="reject")

    assert response.status_code == 409
    assert ReviewDecision.objects.count() == 1


# --- freeze and export ----------------------------------------------------------------------


def test_freezing_records_hash_counts_and_a_seeded_split(
    client: APIClient, project: Project
) -> None:
    version = frozen_version(client, project, seed=7, validation_fraction=0.2, note="first cut")

    assert version["number"] == 1
    assert len(version["content_hash"]) == 64
    assert version["example_count"] == len(TICKETS)
    assert version["train_count"] + version["validation_count"] == len(TICKETS)
    assert version["validation_count"] == round(len(TICKETS) * 0.2)
    assert (version["seed"], version["note"]) == (7, "first cut")
    detail = client.get(api(project, f"dataset-versions/{version['id']}/")).json()
    assert detail == version
    listing = client.get(api(project, f"datasets/{version['dataset']}/versions/")).json()["results"]
    assert [v["id"] for v in listing] == [version["id"]]


@pytest.mark.parametrize("fraction", [0.05, 0.5])
def test_a_validation_fraction_outside_the_guides_bounds_names_the_field(
    client: APIClient, project: Project, fraction: float
) -> None:
    dataset = create_dataset(client, project)
    import_file(client, project, dataset["id"], valid_file())
    approve_all(client, project, dataset["id"])

    response = client.post(
        api(project, f"datasets/{dataset['id']}/versions/"),
        {"validation_fraction": fraction},
        format="json",
    )

    assert response.status_code == 400
    assert "validation_fraction" in response.json()["error"]["message"]
    assert not Dataset.objects.get(pk=dataset["id"]).versions.exists()


@pytest.mark.parametrize("split", [None, "train", "validation"])
def test_the_export_is_chat_jsonl_whose_lines_parse_and_match_the_counts(
    client: APIClient, project: Project, split: str | None
) -> None:
    version = frozen_version(client, project, validation_fraction=0.2)
    params = {"split": split} if split else {}

    response = client.get(api(project, f"dataset-versions/{version['id']}/export/"), params)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/jsonl"
    suffix = f"-{split}" if split else ""
    assert response["Content-Disposition"] == (f'attachment; filename="tickets-v1{suffix}.jsonl"')
    assert isinstance(response, StreamingHttpResponse)  # streamed, not built in memory
    lines = b"".join(response.streaming_content).decode().splitlines()
    records = [json.loads(line) for line in lines]
    expected = {
        None: version["example_count"],
        "train": version["train_count"],
        "validation": version["validation_count"],
    }[split]
    assert len(records) == expected
    assert all(record["messages"][-1]["role"] == "assistant" for record in records)


def test_an_unknown_export_split_is_refused(client: APIClient, project: Project) -> None:
    version = frozen_version(client, project)
    response = client.get(
        api(project, f"dataset-versions/{version['id']}/export/"), {"split": "test"}
    )
    assert response.status_code == 400
    assert "split" in response.json()["error"]["fields"]


# --- training -------------------------------------------------------------------------------


def test_a_training_job_is_queued_with_validated_hyperparameters(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"epochs": 4, "learning_rate": "0.0001"},
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    job = response.json()
    assert job["status"] == "queued"
    assert job["hyperparameters"]["epochs"] == 4
    assert job["hyperparameters"]["learning_rate"] == 0.0001
    assert job["model_name"] == "tickets-ft"
    assert job["dataset_version"] == version["id"]
    assert TrainingJob.objects.get(pk=job["id"]).status == JobStatus.QUEUED
    listing = client.get(api(project, "training-jobs/")).json()["results"]
    assert [j["id"] for j in listing] == [job["id"]]


@pytest.mark.parametrize(
    ("hyperparameters", "named"),
    [
        ({"epochs": 0}, "hyperparameters.epochs"),
        ({"epochs": "many"}, "hyperparameters.epochs"),
        ({"warmup": 3}, "warmup"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_field(
    client: APIClient,
    project: Project,
    base_model: BaseModel,
    hyperparameters: dict[str, Any],
    named: str,
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": hyperparameters,
        },
        format="json",
    )

    assert response.status_code == 400
    assert named in response.json()["error"]["message"]
    assert not TrainingJob.objects.exists()


def test_an_unknown_base_model_names_the_field(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)
    response = client.post(
        api(project, "training-jobs/"),
        {"dataset_version": version["id"], "base_model": "gpt-9"},
        format="json",
    )
    assert response.status_code == 400
    assert "base_model" in response.json()["error"]["fields"]


def test_the_job_detail_carries_its_loss_curve(
    client: APIClient, project: Project, world: World
) -> None:
    job = world.queued_job
    TrainingMetric.objects.create(
        job=job, step=1, epoch=0.5, train_loss=2.0, learning_rate=1e-3, tokens_per_second=900.0
    )
    TrainingMetric.objects.create(
        job=job, step=2, epoch=1.0, train_loss=1.5, val_loss=1.7, seconds_left=0.0
    )

    detail = client.get(api(project, f"training-jobs/{job.pk}/")).json()

    empty = {"learning_rate": None, "tokens_per_second": None, "seconds_left": None}
    assert detail["metrics"] == [
        {
            **empty,
            "step": 1,
            "epoch": 0.5,
            "train_loss": 2.0,
            "val_loss": None,
            "learning_rate": 1e-3,
            "tokens_per_second": 900.0,
        },
        {**empty, "step": 2, "epoch": 1.0, "train_loss": 1.5, "val_loss": 1.7, "seconds_left": 0.0},
    ]
    assert [c["step"] for c in detail["checkpoints"]] == [2]  # the world's one checkpoint
    assert detail["overfitting"] is None


def test_the_estimate_answers_before_launch_and_stores_nothing(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/estimate/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"epochs": 9},
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    estimate = response.json()
    assert estimate["epochs"] == 9
    assert estimate["training_tokens"] == estimate["tokens_per_epoch"] * 9 > 0
    assert estimate["seconds"] > 0 and estimate["cost_usd"] is not None
    codes = {w["code"] for w in estimate["warnings"]}
    assert {"insufficient_data", "many_epochs"} <= codes
    assert not TrainingJob.objects.exists()
    bad = client.post(
        api(project, "training-jobs/estimate/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"lora_r": 0},
        },
        format="json",
    )
    assert bad.status_code == 400 and "hyperparameters.lora_r" in bad.json()["error"]["message"]


def test_no_answer_names_where_an_adapter_lies_on_the_server(
    client: APIClient, project: Project, world: World
) -> None:
    store = settings.FTPORTAL_ARTIFACTS_DIR
    job = world.queued_job
    job.adapter_dir = str(store / f"adapters/job-{job.pk}")
    job.save()
    Checkpoint.objects.create(
        job=job, step=6, path=str(store / f"adapters/job-{job.pk}/checkpoint-6"), val_loss=0.7
    )
    client.post(api(project, f"training-jobs/{job.pk}/checkpoints/6/register/"))

    detail = client.get(api(project, f"training-jobs/{job.pk}/"))
    models = client.get(api(project, "models/"))

    assert detail.json()["adapter_dir"] == f"adapters/job-{job.pk}"
    assert detail.json()["checkpoints"][-1]["path"] == f"adapters/job-{job.pk}/checkpoint-6"
    newest = models.json()["results"][0]["versions"][0]
    assert (newest["adapter_dir"], newest["checkpoint_step"]) == (
        f"adapters/job-{job.pk}/checkpoint-6",
        6,
    )
    for response in (detail, models):
        assert str(store) not in response.content.decode()


def test_a_checkpoint_registers_as_a_model_version_once_through_the_api(
    client: APIClient, project: Project, world: World
) -> None:
    job = world.queued_job
    Checkpoint.objects.create(job=job, step=4, path="/artifacts/ckpt-4", val_loss=0.8)
    url = api(project, f"training-jobs/{job.pk}/checkpoints/4/register/")

    first = client.post(url)
    again = client.post(url)

    assert first.status_code == 201
    version = ModelVersion.objects.get(pk=first.json()["model_version"])
    assert version.checkpoint is not None
    assert (version.adapter_dir, version.checkpoint.step) == ("/artifacts/ckpt-4", 4)
    assert again.status_code == 409
    detail = client.get(api(project, f"training-jobs/{job.pk}/")).json()
    assert [c["step"] for c in detail["checkpoints"]] == [2, 4]
    assert detail["events"][0]["message"].startswith("Queued by")  # oldest first
    assert any("insufficient data" in e["message"] for e in detail["events"])
    assert version.pk in detail["model_versions"]
    missing = client.post(api(project, f"training-jobs/{job.pk}/checkpoints/99/register/"))
    assert missing.status_code == 404


def test_a_queued_job_is_cancelled_once(client: APIClient, project: Project, world: World) -> None:
    url = api(project, f"training-jobs/{world.queued_job.pk}/cancel/")

    first = client.post(url)
    again = client.post(url)

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert again.status_code == 409


# --- registry -------------------------------------------------------------------------------


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


# --- evaluation -----------------------------------------------------------------------------


def test_an_evaluation_is_queued_with_the_version_and_its_base_as_candidates(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 16},
        format="json",
    )

    assert response.status_code == 201, response.content
    run = response.json()
    assert run["status"] == "queued"
    assert run["max_new_tokens"] == 16
    assert run["split"] == "validation"
    candidates = run["candidates"]
    assert len(candidates) == 2  # the world's training split is too small for 5 shots
    assert [c["model_version"] for c in candidates] == [world.second.pk, None]
    assert [c["kind"] for c in candidates] == ["model_version", "base"]
    assert all(c["base_model"] == "smollm2-135m-instruct" for c in candidates)
    assert EvalRun.objects.get(pk=run["id"]).status == EvalStatus.QUEUED
    listing = client.get(api(project, "evaluations/")).json()["results"]
    # Newest first: this one, the world's, and those its promotions passed the gate with.
    gate_runs = [r.pk for r in reversed(world.gate_runs)]
    assert [r["id"] for r in listing] == [run["id"], world.eval_run.pk, *gate_runs]


def test_max_new_tokens_out_of_bounds_is_refused(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 0},
        format="json",
    )
    assert response.status_code == 400
    assert "max_new_tokens" in response.json()["error"]["message"]
    assert list(EvalRun.objects.all()) == [world.eval_run, *reversed(world.gate_runs)]


def test_the_results_endpoint_lists_answers_and_filters_a_wrong_b_right(
    client: APIClient, project: Project, world: World
) -> None:
    # Not the world's request (its run is still queued, and an identical one would get it).
    created = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 32},
        format="json",
    ).json()
    run = EvalRun.objects.get(pk=created["id"])
    tuned, base = run.candidates.order_by("position")[:2]
    items = list(world.version.items.filter(split="validation"))
    for item in items:
        reference = item.messages[-1]["content"]
        EvalResult.objects.create(
            candidate=tuned, item=item, output="no idea", scores={"exact_match": 0.0}
        )
        EvalResult.objects.create(
            candidate=base, item=item, output=reference, scores={"exact_match": 1.0}
        )

    listed = client.get(api(project, f"evaluations/{run.pk}/results/")).json()["results"]
    a_wrong_b_right = client.get(
        api(project, f"evaluations/{run.pk}/results/"),
        {"a": str(tuned.pk), "b": str(base.pk), "outcome": "a_wrong_b_right"},
    ).json()["results"]
    a_right_b_wrong = client.get(
        api(project, f"evaluations/{run.pk}/results/"),
        {"a": str(tuned.pk), "b": str(base.pk), "outcome": "a_right_b_wrong"},
    ).json()["results"]
    bad = client.get(api(project, f"evaluations/{run.pk}/results/"), {"outcome": "sideways"})

    assert [row["position"] for row in listed] == [item.position for item in items]
    row = listed[0]
    assert row["candidate"] == tuned.pk
    assert row["prompt"] == items[0].messages[:-1]
    assert row["reference"] == items[0].messages[-1]["content"]
    assert (row["output"], row["scores"]) == ("no idea", {"exact_match": 0.0})
    assert len(a_wrong_b_right) == len(items) and a_right_b_wrong == []
    assert bad.status_code == 400 and "outcome" in bad.content.decode()


def test_a_constrained_candidate_needs_an_answer_contract_on_the_version(
    client: APIClient, project: Project, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "dataset_version": world.version.pk,
        "candidates": [
            {"kind": "model_version", "model_version": world.second.pk},
            {"kind": "base", "base_model": "smollm2-135m-instruct", "constrained": True},
        ],
    }

    refused = client.post(api(project, "evaluations/"), body, format="json")
    world.version.answer_contract = {"kind": "regex", "pattern": "[a-z]+"}
    world.version.save(update_fields=["answer_contract"])
    accepted = client.post(api(project, "evaluations/"), body, format="json")

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "has no answer contract" in error["message"]
    assert "candidates[1].constrained" in refused.content.decode()
    assert accepted.status_code == 201, accepted.content
    candidates = accepted.json()["candidates"]
    assert [c["constrained"] for c in candidates] == [False, True]
    assert candidates[1]["label"].endswith(", constrained to contract")


def test_an_evaluation_with_listed_candidates_and_a_judge_is_queued(
    client: APIClient, project: Project, world: World
) -> None:
    body = {
        "dataset_version": world.version.pk,
        "candidates": [
            {"kind": "model_version", "model_version": world.second.pk},
            {
                "kind": "openai_compatible",
                "api_model": "gpt-4o-mini",
                "endpoint": "openai",
                "user_template": "Ticket: {input}",
                "input_usd_per_million_tokens": "0.30",
                "output_usd_per_million_tokens": "1.20",
            },
        ],
        "primary_metric": "token_f1",
        "judge": {
            "kind": "anthropic",
            "model": "claude-haiku-4-5",
            "endpoint": "anthropic",
            "max_new_tokens": 300,
        },
    }

    response = client.post(api(project, "evaluations/"), body, format="json")
    refused = client.post(
        api(project, "evaluations/"),
        {**body, "judge": {"kind": "anthropic", "model": " ", "endpoint": "anthropic"}},
        format="json",
    )

    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["judge_kind"], run["judge_model"], run["judge_max_new_tokens"]) == (
        "anthropic",
        "claude-haiku-4-5",
        300,
    )
    assert [c["kind"] for c in run["candidates"]] == ["model_version", "openai_compatible"]
    assert [c["endpoint"] for c in run["candidates"]] == [None, "openai"]
    assert run["judge_endpoint"] == "anthropic"
    assert run["candidates"][1]["input_usd_per_million_tokens"] == "0.3000"
    assert refused.status_code == 400 and "judge" in refused.content.decode()
    # The world's (one queued, two its promotions passed the gate with) and this one.
    assert EvalRun.objects.count() == 2 + len(world.gate_runs)
