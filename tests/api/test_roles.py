"""Who may do what through the API: every action tried by every role, both ways.

The expected roles are written out here rather than read from ftportal.roles, so a change to
the role table that lets the wrong people act fails these tests. A refused request must also
leave the database exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    ImportBatch,
    ReviewDecision,
)
from evaluation.models import EvalResult, EvalRun
from ftportal.models import AuditEntry, Membership, Project
from ftportal.roles import Role
from registry.models import Alias, AliasChange, ModelVersion
from training.models import TrainingJob

from .builders import World, token_client, upload, valid_file

pytestmark = pytest.mark.django_db

CURATORS = frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN})
LEADS = frozenset({Role.ML_LEAD, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
STRONG_PASSWORD = "correct-horse-battery-staple-42"


def pending_count(w: World) -> int:
    """What a bulk action on the default (pending) queue must confirm it acts on."""
    return w.dataset.examples.filter(status=ExampleStatus.PENDING).count()


@dataclass(frozen=True)
class Write:
    """One changing request: where it goes, what it sends, who may send it, what success is."""

    name: str
    allowed: frozenset[Role]
    path: Callable[[World], str]
    body: Callable[[World], dict[str, Any]]
    success: int
    multipart: bool = False
    method: str = "post"


WRITES = [
    Write(
        "create dataset",
        CURATORS,
        lambda w: "datasets/",
        lambda w: {"name": "new data"},
        201,
    ),
    Write(
        "import",
        CURATORS,
        lambda w: f"datasets/{w.dataset.pk}/imports/",
        lambda w: {"file": upload(valid_file(2))},
        201,
        multipart=True,
    ),
    Write(
        "review",
        CURATORS,
        lambda w: f"examples/{w.pending.pk}/review/",
        lambda w: {"action": "approve", "revision": w.pending.revision},
        200,
    ),
    # Bulk actions are the lead's: one reviewer must not re-decide everyone's work at once.
    Write(
        "bulk approve",
        LEADS,
        lambda w: f"datasets/{w.dataset.pk}/review-bulk/",
        lambda w: {"action": "approve", "expected_count": pending_count(w)},
        200,
    ),
    Write(
        "bulk reject",
        LEADS,
        lambda w: f"datasets/{w.dataset.pk}/review-bulk/",
        lambda w: {"action": "reject", "expected_count": pending_count(w)},
        200,
    ),
    Write(
        "bulk tag",
        LEADS,
        lambda w: f"datasets/{w.dataset.pk}/review-bulk/",
        lambda w: {"action": "tag", "tag": "urgent", "expected_count": pending_count(w)},
        200,
    ),
    Write(
        "set answer contract",
        LEADS,
        lambda w: f"datasets/{w.dataset.pk}/contract/",
        lambda w: {"answer_contract": {"kind": "label_set", "labels": ["billing", "bug"]}},
        200,
    ),
    Write(
        "freeze",
        LEADS,
        lambda w: f"datasets/{w.dataset.pk}/versions/",
        lambda w: {"seed": 3},
        201,
    ),
    Write(
        "create job",
        LEADS,
        lambda w: "training-jobs/",
        lambda w: {"dataset_version": w.version.pk, "base_model": "smollm2-135m-instruct"},
        201,
    ),
    Write(
        "register checkpoint",
        LEADS,
        lambda w: f"training-jobs/{w.queued_job.pk}/checkpoints/2/register/",
        lambda w: {},
        201,
    ),
    Write(
        "cancel job",
        LEADS,
        lambda w: f"training-jobs/{w.queued_job.pk}/cancel/",
        lambda w: {},
        200,
    ),
    Write(
        "create eval",
        LEADS,
        lambda w: "evaluations/",
        # Not the world's queued run's request: an identical one would get that run (200).
        lambda w: {"model_version": w.second.pk, "max_new_tokens": 32},
        201,
    ),
    Write(
        "cancel eval",
        LEADS,
        lambda w: f"evaluations/{w.eval_run.pk}/cancel/",
        lambda w: {},
        200,
    ),
    Write(
        "evaluate checkpoints",
        LEADS,
        lambda w: f"training-jobs/{w.queued_job.pk}/evaluate-checkpoints/",
        lambda w: {},
        201,
    ),
    Write(
        "tag eval result",
        LEADS,
        lambda w: f"evaluations/{w.eval_run.pk}/results/{w.eval_result.pk}/tags/",
        lambda w: {"tag": "wrong label"},
        200,
    ),
    Write(
        "send eval results to review",
        LEADS,
        lambda w: f"evaluations/{w.eval_run.pk}/send-to-review/",
        lambda w: {"results": [w.eval_result.pk]},
        201,
    ),
    Write(
        "promote",
        LEADS,
        lambda w: f"model-versions/{w.first.pk}/promote/",
        lambda w: {"reason": "try", "expected_current_version": 2},
        200,
    ),
    Write(
        "rollback",
        LEADS,
        lambda w: f"models/{w.registered_model.pk}/rollback/",
        lambda w: {"reason": "try", "expected_current_version": 2, "target_version": 1},
        200,
    ),
    Write(
        "create member",
        ADMINS,
        lambda w: "members/",
        lambda w: {
            "username": "newcomer",
            "role": "reviewer",
            "create_user": True,
            "password": STRONG_PASSWORD,
        },
        201,
    ),
    Write(
        "change role",
        ADMINS,
        lambda w: f"members/{w.owner.pk}/",
        lambda w: {"role": "reviewer"},
        200,
        method="patch",
    ),
    Write(
        "remove member",
        ADMINS,
        lambda w: f"members/{w.owner.pk}/",
        lambda w: {},
        204,
        method="delete",
    ),
]


@dataclass(frozen=True)
class Read:
    name: str
    path: Callable[[World], str]
    names_an_object: bool = True


READS = [
    Read("project", lambda w: "", names_an_object=False),
    Read("base models", lambda w: "base-models/", names_an_object=False),
    Read("endpoints", lambda w: "endpoints/", names_an_object=False),
    Read("datasets", lambda w: "datasets/", names_an_object=False),
    Read("dataset", lambda w: f"datasets/{w.dataset.pk}/"),
    Read("examples", lambda w: f"datasets/{w.dataset.pk}/examples/"),
    Read("versions", lambda w: f"datasets/{w.dataset.pk}/versions/"),
    Read("answer contract", lambda w: f"datasets/{w.dataset.pk}/contract/"),
    Read("example", lambda w: f"examples/{w.approved.pk}/"),
    Read("version", lambda w: f"dataset-versions/{w.version.pk}/"),
    Read("export", lambda w: f"dataset-versions/{w.version.pk}/export/"),
    Read("jobs", lambda w: "training-jobs/", names_an_object=False),
    Read("job", lambda w: f"training-jobs/{w.queued_job.pk}/"),
    Read("models", lambda w: "models/", names_an_object=False),
    Read("model", lambda w: f"models/{w.registered_model.pk}/"),
    Read("history", lambda w: f"models/{w.registered_model.pk}/history/"),
    Read("model version", lambda w: f"model-versions/{w.first.pk}/"),
    Read("evaluations", lambda w: "evaluations/", names_an_object=False),
    Read("evaluation", lambda w: f"evaluations/{w.eval_run.pk}/"),
    Read("evaluation results", lambda w: f"evaluations/{w.eval_run.pk}/results/"),
]
OBJECT_READS = [read for read in READS if read.names_an_object]
# These name no object in their URL (job and eval creation name theirs in the body, tested
# below); every other write acts on an object its URL names.
CREATES = {"create dataset", "create job", "create eval"}
# Managing members is refused by role (403) before any member is looked up; reaching another
# project's member by id is tested in test_members.py.
MEMBER_WRITES = {"create member", "change role", "remove member"}
WRITES_ON_OBJECTS = [w for w in WRITES if w.name not in CREATES | MEMBER_WRITES]


def read_name(read: Read) -> str:
    return read.name


def write_name(write: Write) -> str:
    return write.name


def db_state() -> dict[str, object]:
    """Everything the API can change, so a refused request can be shown to change nothing."""
    return {
        "datasets": sorted(Dataset.objects.values_list("id", "name", "answer_contract")),
        "imports": ImportBatch.objects.count(),
        "examples": sorted(Example.objects.values_list("id", "status", "messages")),
        "decisions": ReviewDecision.objects.count(),
        "tagged": Example.tags.through.objects.count(),
        "versions": DatasetVersion.objects.count(),
        "jobs": sorted(TrainingJob.objects.values_list("id", "status", "cancel_requested")),
        "evals": sorted(EvalRun.objects.values_list("id", "status")),
        "eval_results": sorted(EvalResult.objects.values_list("id", "tags", "sent_to_review")),
        "aliases": sorted(Alias.objects.values_list("registered_model", "name", "model_version")),
        "alias_changes": AliasChange.objects.count(),
        "model_versions": ModelVersion.objects.count(),
        "members": sorted(Membership.objects.values_list("project", "user", "role")),
        "users": User.objects.count(),
        "audit_entries": AuditEntry.objects.count(),
    }


def send(client: APIClient, project: Project, write: Write, world: World) -> Any:
    url = f"/api/projects/{project.pk}/{write.path(world)}"
    body = write.body(world)
    if write.multipart:
        return client.post(url, body, format="multipart")
    return getattr(client, write.method)(url, body, format="json")


@pytest.fixture
def client_in(make_member: Callable[..., User]) -> Callable[[Role], APIClient]:
    def make(role: Role) -> APIClient:
        return token_client(make_member(role))

    return make


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("write", WRITES, ids=write_name)
def test_each_role_may_take_exactly_its_actions(
    world: World, client_in: Callable[[Role], APIClient], role: Role, write: Write
) -> None:
    client = client_in(role)
    before = db_state()

    response = send(client, world.project, write, world)

    if role in write.allowed:
        assert response.status_code == write.success, response.content
        assert db_state() != before
    else:
        assert response.status_code == 403, response.content
        assert role.value in response.json()["error"]["message"]
        assert db_state() == before


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER], ids=lambda r: r.value)
@pytest.mark.parametrize("read", READS, ids=read_name)
def test_every_member_may_read_everything(
    world: World, client_in: Callable[[Role], APIClient], role: Role, read: Read
) -> None:
    response = client_in(role).get(f"/api/projects/{world.project.pk}/{read.path(world)}")
    assert response.status_code == 200


@pytest.fixture
def outsider(world: World) -> APIClient:
    """Signed in, and a member of nothing."""
    return token_client(User.objects.create_user(username="outsider", password="pw"))


@pytest.mark.parametrize("read", READS, ids=read_name)
def test_a_non_member_reads_nothing_and_learns_nothing(
    world: World, outsider: APIClient, read: Read
) -> None:
    response = outsider.get(f"/api/projects/{world.project.pk}/{read.path(world)}")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not found."}}


@pytest.mark.parametrize("write", WRITES, ids=write_name)
def test_a_non_member_changes_nothing(world: World, outsider: APIClient, write: Write) -> None:
    before = db_state()
    response = send(outsider, world.project, write, world)
    assert response.status_code == 404
    assert db_state() == before


def test_a_project_that_does_not_exist_looks_like_one_you_are_not_in(outsider: APIClient) -> None:
    assert outsider.get("/api/projects/999999/").status_code == 404


@pytest.fixture
def other_project(world: World, make_member: Callable[..., User]) -> tuple[Project, APIClient]:
    """A second project in which the caller is an ML lead: full rights, wrong project."""
    other = Project.objects.create(name="Other team")
    lead = make_member(Role.ML_LEAD, target=other)
    return other, token_client(lead)


@pytest.mark.parametrize("read", OBJECT_READS, ids=read_name)
def test_reading_another_projects_object_by_id_is_not_found(
    world: World, other_project: tuple[Project, APIClient], read: Read
) -> None:
    other, client = other_project
    response = client.get(f"/api/projects/{other.pk}/{read.path(world)}")
    assert response.status_code == 404


@pytest.mark.parametrize("write", WRITES_ON_OBJECTS, ids=write_name)
def test_acting_on_another_projects_object_by_id_is_not_found(
    world: World, other_project: tuple[Project, APIClient], write: Write
) -> None:
    other, client = other_project
    before = db_state()
    response = send(client, other, write, world)
    assert response.status_code == 404, response.content
    assert db_state() == before


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_only_those_who_train_may_ask_for_an_estimate(
    world: World, client_in: Callable[[Role], APIClient], role: Role
) -> None:
    response = client_in(role).post(
        f"/api/projects/{world.project.pk}/training-jobs/estimate/",
        {"dataset_version": world.version.pk, "base_model": "smollm2-135m-instruct"},
        format="json",
    )
    assert response.status_code == (200 if role in LEADS else 403), response.content


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("training-jobs/", "dataset_version", "dataset_version"),
        ("training-jobs/estimate/", "dataset_version", "dataset_version"),
        ("evaluations/", "model_version", "model_version"),
    ],
)
def test_referring_to_another_projects_object_in_a_body_is_refused(
    world: World,
    other_project: tuple[Project, APIClient],
    path: str,
    body: str,
    field: str,
) -> None:
    other, client = other_project
    ids = {"dataset_version": world.version.pk, "model_version": world.second.pk}
    before = db_state()

    # Jobs also need a base model; evaluations take none (an unknown field is its own 400).
    extra = {"base_model": "smollm2-135m-instruct"} if path.startswith("training-jobs") else {}
    response = client.post(
        f"/api/projects/{other.pk}/{path}", {body: ids[body], **extra}, format="json"
    )

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert db_state() == before
