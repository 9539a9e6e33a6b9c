"""The HTML pages through Django's test client: who may do what, import errors, review, escaping.

No browser here; tests/e2e drives one. These tests read the HTML a person would see.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    ImportBatch,
    ReviewAction,
    ReviewDecision,
)
from datasets.services import dataset_version_freeze
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from ftportal.models import Project
from ftportal.roles import Action, Role
from registry.models import Alias, AliasChange, ModelVersion, RegisteredModel
from registry.services import model_version_promote
from tests.charts import page_charts, series_points
from tests.factories import finished_evaluation, production_number
from training.models import Checkpoint, JobEvent, JobStatus, TrainingJob, TrainingMetric

XSS = "<script>window.__xss=1</script>"
XSS_ESCAPED = "&lt;script&gt;window.__xss=1&lt;/script&gt;"
HTMX = {"HX-Request": "true"}


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the support ticket. Answer in JSON."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def jsonl_line(question: str, answer: str = '{"category": "billing"}') -> bytes:
    return json.dumps({"messages": chat(question, answer)}).encode()


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/jsonl")


def page_text(response) -> str:
    """The response body with entities decoded, for reading messages as a person would."""
    return unescape(response.content.decode())


class _TableReader(HTMLParser):
    """Collects the text of each cell of the first table with the given class."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class = css_class
        self.depth = 0  # > 0 while inside the wanted table
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and (self.depth or (self.css_class in classes and not self.rows)):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(response, css_class: str) -> list[list[str]]:
    reader = _TableReader(css_class)
    reader.feed(response.content.decode())
    return [row for row in reader.rows if row]  # header rows have th cells only


@dataclass
class World:
    """A project with something for every action to act on."""

    project: Project
    dataset: Dataset
    pending: Example
    version: DatasetVersion
    running_job: TrainingJob
    registered: RegisteredModel
    v1: ModelVersion
    v2: ModelVersion
    base_model: BaseModel
    queued_eval: EvalRun


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


def _job(world_parts: dict, status: JobStatus, **extra: object) -> TrainingJob:
    return TrainingJob.objects.create(
        project=world_parts["project"],
        dataset_version=world_parts["version"],
        base_model=world_parts["base_model"],
        provider=world_parts["base_model"].provider,
        hyperparameters={"epochs": 1, "max_steps": 3},
        model_name="tickets-ft",
        created_by=world_parts["user"],
        status=status,
        **extra,
    )


def _model_version(registered: RegisteredModel, number: int, job: TrainingJob) -> ModelVersion:
    return ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        training_job=job,
        dataset_version=job.dataset_version,
        dataset_hash=job.dataset_version.content_hash,
        base_model=job.base_model,
        hyperparameters=job.hyperparameters,
        adapter_dir=f"/nowhere/job-{job.pk}",
        final_train_loss=1.0,
        final_val_loss=1.1,
    )


@pytest.fixture
def world(project: Project, dataset: Dataset, base_model: BaseModel, lead: User) -> World:
    pending = Example.objects.create(dataset=dataset, messages=chat("Where is my invoice?", "{}"))
    for n in range(4):
        Example.objects.create(
            dataset=dataset,
            messages=chat(f"Ticket {n}: the app crashes", '{"category": "bug"}'),
            status=ExampleStatus.APPROVED,
        )
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.15)
    parts = {"project": project, "version": version, "base_model": base_model, "user": lead}
    running = _job(parts, JobStatus.RUNNING, step=1, total_steps=3)
    Checkpoint.objects.create(job=running, step=1, path="/nowhere/step-1", train_loss=2.0)
    registered = RegisteredModel.objects.create(project=project, name="tickets-ft")
    v1 = _model_version(registered, 1, _job(parts, JobStatus.SUCCEEDED, step=3, total_steps=3))
    v2 = _model_version(registered, 2, _job(parts, JobStatus.SUCCEEDED, step=3, total_steps=3))
    # Each promotion with the finished evaluation the gate asks for; v2 after v1, so that a
    # rollback to v1 is possible, and v1 beat v2 later, so promoting v1 again passes the gate.
    items = version.items.count()
    right, wrong = [1.0] * items, [0.0] * items
    for candidate, against in ((v1, None), (v2, v1)):
        finished_evaluation(
            version=candidate, against=against, scores=right, baseline_scores=wrong, user=lead
        )
        model_version_promote(
            model_version=candidate,
            expected_current_version=production_number(candidate.registered_model),
            user=lead,
            reason="better",
        )
    finished_evaluation(version=v1, against=v2, scores=right, baseline_scores=wrong, user=lead)
    # An evaluation still queued, for the cancel button.
    queued_eval = EvalRun.objects.create(project=project, dataset_version=version, created_by=lead)
    return World(
        project, dataset, pending, version, running, registered, v1, v2, base_model, queued_eval
    )


# Each page action as (method, url, form data), built for a given world.
PageAction = Callable[[World], tuple[str, str, dict[str, object]]]
PAGE_ACTIONS: dict[str, tuple[Action, PageAction]] = {
    "import": (
        Action.IMPORT_EXAMPLES,
        lambda w: (
            "post",
            reverse("dataset_import", args=[w.project.pk, w.dataset.pk]),
            {"file": upload("more.jsonl", jsonl_line("Refund please"))},
        ),
    ),
    # Every member reads the queue (managers read only); kept here for the outsiders' 404.
    "open the review queue": (
        Action.VIEW,
        lambda w: ("get", reverse("review_queue", args=[w.project.pk, w.dataset.pk]), {}),
    ),
    "review": (
        Action.REVIEW,
        lambda w: (
            "post",
            reverse("review_decide", args=[w.project.pk, w.pending.pk]),
            {"action": "approve", "revision": w.pending.revision},
        ),
    ),
    "freeze": (
        Action.FREEZE,
        lambda w: (
            "post",
            reverse("dataset_freeze", args=[w.project.pk, w.dataset.pk]),
            {"validation_fraction": "0.15", "seed": "42"},
        ),
    ),
    "train": (
        Action.TRAIN,
        lambda w: (
            "post",
            reverse("job_create", args=[w.project.pk, w.version.pk]),
            {"base_model": w.base_model.key, "epochs": "1", "max_steps": "3"},
        ),
    ),
    "cancel": (
        Action.TRAIN,
        lambda w: ("post", reverse("job_cancel", args=[w.project.pk, w.running_job.pk]), {}),
    ),
    "open the launch form": (
        Action.TRAIN,
        lambda w: ("get", reverse("job_launch", args=[w.project.pk, w.version.pk]), {}),
    ),
    "estimate": (
        Action.TRAIN,
        lambda w: ("get", reverse("job_estimate", args=[w.project.pk, w.version.pk]), {}),
    ),
    "register a checkpoint": (
        Action.TRAIN,
        lambda w: (
            "post",
            reverse(
                "checkpoint_register",
                args=[w.project.pk, w.running_job.pk, w.running_job.checkpoints.get().pk],
            ),
            {},
        ),
    ),
    "evaluate": (
        Action.EVALUATE,
        lambda w: ("post", reverse("eval_create", args=[w.project.pk, w.v2.pk]), {}),
    ),
    "cancel an evaluation": (
        Action.EVALUATE,
        lambda w: ("post", reverse("eval_cancel", args=[w.project.pk, w.queued_eval.pk]), {}),
    ),
    "open the promotion page": (
        Action.PROMOTE,
        lambda w: ("get", reverse("version_promote", args=[w.project.pk, w.v1.pk]), {}),
    ),
    "promote": (
        Action.PROMOTE,
        lambda w: (
            "post",
            reverse("version_promote", args=[w.project.pk, w.v1.pk]),
            {"reason": "better", "expected_current_version": "2"},
        ),
    ),
    "rollback": (
        Action.PROMOTE,
        lambda w: (
            "post",
            reverse("model_rollback", args=[w.project.pk, w.registered.pk]),
            {"reason": "drift", "expected_current_version": "2", "target_version": "1"},
        ),
    ),
}
FORBIDDEN = {
    Role.REVIEWER: [
        "freeze",
        "train",
        "cancel",
        "open the launch form",
        "estimate",
        "register a checkpoint",
        "evaluate",
        "cancel an evaluation",
        "open the promotion page",
        "promote",
        "rollback",
    ],
    Role.MANAGER: [
        "import",
        "review",
        "freeze",
        "train",
        "cancel",
        "open the launch form",
        "estimate",
        "register a checkpoint",
        "evaluate",
        "cancel an evaluation",
        "open the promotion page",
        "promote",
        "rollback",
    ],
}
PAGES: dict[str, Callable[[World], str]] = {
    "project": lambda w: reverse("project_detail", args=[w.project.pk]),
    "dataset": lambda w: reverse("dataset_detail", args=[w.project.pk, w.dataset.pk]),
    "version": lambda w: reverse("version_detail", args=[w.project.pk, w.version.pk]),
    "export": lambda w: reverse("version_export", args=[w.project.pk, w.version.pk]),
    "job": lambda w: reverse("job_detail", args=[w.project.pk, w.running_job.pk]),
    "registry": lambda w: reverse("model_list", args=[w.project.pk]),
    "model version": lambda w: reverse("model_version_detail", args=[w.project.pk, w.v1.pk]),
    "catalog": lambda w: reverse("base_model_catalog", args=[w.project.pk]),
    "review queue": lambda w: reverse("review_queue", args=[w.project.pk, w.dataset.pk]),
}


def db_state() -> dict[str, object]:
    """Everything a page action could change, to show that a refused one changed nothing."""
    return {
        "examples": sorted(Example.objects.values_list("id", "status", "messages")),
        "imports": ImportBatch.objects.count(),
        "decisions": ReviewDecision.objects.count(),
        "versions": DatasetVersion.objects.count(),
        "jobs": sorted(TrainingJob.objects.values_list("id", "status", "cancel_requested")),
        "evals": sorted(EvalRun.objects.values_list("id", "status")),
        "models": ModelVersion.objects.count(),
        "aliases": sorted(Alias.objects.values_list("registered_model", "name", "model_version")),
        "alias_changes": AliasChange.objects.count(),
    }


def act(client: Client, world: World, name: str):
    method, url, data = PAGE_ACTIONS[name][1](world)
    return getattr(client, method)(url, data)


FORBIDDEN_CASES = [(role, name) for role, names in FORBIDDEN.items() for name in names]


@pytest.mark.parametrize(
    ("role", "action_name"), FORBIDDEN_CASES, ids=[f"{r.value}-{a}" for r, a in FORBIDDEN_CASES]
)
def test_a_member_whose_role_forbids_an_action_gets_a_403_page_naming_the_role(
    client: Client, world: World, make_member, role: Role, action_name: str
) -> None:
    client.force_login(make_member(role))
    before = db_state()

    response = act(client, world, action_name)

    assert response.status_code == 403
    text = page_text(response)
    action = PAGE_ACTIONS[action_name][0]
    assert f"Your role '{role.value}' in project 'Ticket triage'" in text
    assert f"does not allow you to {action.label}" in text
    assert db_state() == before


@pytest.mark.parametrize("action_name", list(PAGE_ACTIONS))
def test_a_user_outside_the_project_gets_404_for_every_action_and_nothing_changes(
    client: Client, world: World, action_name: str
) -> None:
    stranger = User.objects.create_user(username="stranger", password="pw")
    client.force_login(stranger)
    before = db_state()

    response = act(client, world, action_name)

    assert response.status_code == 404
    assert "Ticket triage" not in page_text(response)  # the project's name does not leak
    assert db_state() == before


@pytest.mark.parametrize("page", list(PAGES))
def test_a_user_outside_the_project_cannot_see_its_pages(
    client: Client, world: World, page: str
) -> None:
    client.force_login(User.objects.create_user(username="stranger", password="pw"))
    response = client.get(PAGES[page](world))
    assert response.status_code == 404
    assert "Ticket triage" not in page_text(response)


@pytest.mark.parametrize("page", list(PAGES))
def test_a_manager_can_read_every_page(
    client: Client, world: World, make_member, page: str
) -> None:
    client.force_login(make_member(Role.MANAGER))
    assert client.get(PAGES[page](world)).status_code == 200


def test_a_manager_sees_no_buttons_for_actions_the_role_cannot_take(
    client: Client, world: World, make_member
) -> None:
    client.force_login(make_member(Role.MANAGER))
    dataset_page = client.get(PAGES["dataset"](world)).content.decode()
    version_page = client.get(PAGES["version"](world)).content.decode()
    job_page = client.get(PAGES["job"](world)).content.decode()
    registry_page = client.get(PAGES["registry"](world)).content.decode()

    assert 'name="file"' not in dataset_page
    assert "Freeze version" not in dataset_page
    assert "Review pending examples" not in dataset_page
    assert 'id="start-training"' not in version_page
    assert 'id="cancel-job"' not in job_page
    assert "Promote to production" not in registry_page
    assert "Roll back to" not in registry_page


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: Client, world: World) -> None:
    response = client.get(PAGES["dataset"](world))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- importing ---------------------------------------------------------------------------------

VALID_LINE = jsonl_line("I was charged twice")


@pytest.mark.parametrize(
    ("bad_line", "field", "reason"),
    [
        (b'{"messages": [{"role": "user", "content": "Hi"}', "", "invalid JSON"),
        (b'{"conversation": []}', "messages", 'missing key "messages"'),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]}
            ).encode(),
            "messages[1].role",
            "role 'bot' is not allowed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
            "",
            "line is not valid UTF-8 (byte 0xe9",
        ),
    ],
    ids=["malformed-json", "missing-messages", "unknown-role", "not-utf8"],
)
def test_an_import_with_a_bad_line_shows_its_line_number_and_reason_and_stores_nothing(
    client: Client, dataset: Dataset, lead: User, bad_line: bytes, field: str, reason: str
) -> None:
    client.force_login(lead)
    data = b"\n".join([VALID_LINE, bad_line, VALID_LINE]) + b"\n"

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("tickets.jsonl", data)},
    )

    assert response.status_code == 400
    assert "tickets.jsonl: 1 line(s) have errors; nothing was imported." in page_text(response)
    [row] = table_rows(response, "line-errors")
    assert row[0] == "2"
    assert row[1] == field
    assert reason in unescape(row[2])
    assert Example.objects.filter(dataset=dataset).count() == 0
    assert ImportBatch.objects.count() == 0


def test_an_empty_file_is_refused_with_the_reason_and_stores_nothing(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("empty.jsonl", b"")},
    )
    assert response.status_code == 400
    [row] = table_rows(response, "line-errors")
    assert row[2] == "file is empty"
    assert Example.objects.count() == 0
    assert ImportBatch.objects.count() == 0


def test_an_import_without_a_file_asks_for_one(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(reverse("dataset_import", args=[dataset.project_id, dataset.pk]), {})
    assert response.status_code == 400
    assert "Choose a JSONL file to import." in page_text(response)


def test_import_only_the_valid_lines_imports_the_rest_and_reports_the_skipped_line(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    data = b"\n".join([jsonl_line("one"), jsonl_line("two"), b"{not json", jsonl_line("four")])

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("mixed.jsonl", data), "valid_lines_only": "on"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Imported 3 example(s) from mixed.jsonl, skipped 1 line(s) with errors." in page_text(
        response
    )
    examples = Example.objects.filter(dataset=dataset).order_by("source_line")
    assert [e.source_line for e in examples] == [1, 2, 4]
    assert [e.messages[1]["content"] for e in examples] == ["one", "two", "four"]
    assert {e.status for e in examples} == {ExampleStatus.PENDING}
    [batch] = ImportBatch.objects.all()
    assert [error["line"] for error in batch.errors] == [3]
    assert batch.uploaded_by == lead


def test_import_only_the_valid_lines_still_refuses_a_file_with_no_valid_line(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("broken.jsonl", b"{nope\n[1]\n"), "valid_lines_only": "on"},
    )
    assert response.status_code == 400
    assert [row[0] for row in table_rows(response, "line-errors")] == ["1", "2"]
    assert Example.objects.count() == 0


# --- reviewing ---------------------------------------------------------------------------------


@pytest.fixture
def queue(dataset: Dataset) -> list[Example]:
    return [
        Example.objects.create(dataset=dataset, messages=chat(f"Ticket {n}", '{"category": "bug"}'))
        for n in range(3)
    ]


def test_an_htmx_approval_returns_the_next_card_as_a_fragment_and_records_the_decision(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    first, second, _ = queue

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {"action": "approve", "revision": first.revision},
        headers=HTMX,
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert f'data-example-id="{second.pk}"' in html
    assert f"Example {first.pk}: approved." in html
    assert "2 pending · 1 approved · 0 rejected" in html
    [decision] = ReviewDecision.objects.all()
    assert (decision.example, decision.reviewer, decision.action) == (
        first,
        reviewer,
        ReviewAction.APPROVE,
    )


def test_an_htmx_edit_saves_the_new_answer_and_approves(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    first = queue[0]

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {
            "action": "edit",
            "answer": '  {"category": "billing"}  ',
            "comment": "was billing",
            "revision": first.revision,
        },
        headers=HTMX,
    )

    assert response.status_code == 200
    first.refresh_from_db()
    assert first.status == ExampleStatus.APPROVED
    assert first.messages[-1]["content"] == '{"category": "billing"}'
    [decision] = ReviewDecision.objects.all()
    assert decision.action == ReviewAction.EDIT
    assert decision.previous_answer == '{"category": "bug"}'
    assert decision.new_answer == '{"category": "billing"}'
    assert decision.comment == "was billing"


def test_an_htmx_edit_with_an_empty_answer_returns_the_same_card_with_the_error(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    first = queue[0]

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {"action": "edit", "answer": "   ", "revision": first.revision},
        headers=HTMX,
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "<html" not in html
    assert f'data-example-id="{first.pk}"' in html
    assert "The edited answer is empty" in html
    first.refresh_from_db()
    assert first.status == ExampleStatus.PENDING
    assert ReviewDecision.objects.count() == 0


def test_the_last_decision_leaves_nothing_to_review(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    for example in queue:
        response = client.post(
            reverse("review_decide", args=[dataset.project_id, example.pk]),
            {
                "action": "reject" if example is queue[1] else "approve",
                "revision": example.revision,
            },
            headers=HTMX,
        )
    html = response.content.decode()
    assert "Nothing left to review in this dataset." in html
    assert "0 pending · 2 approved · 1 rejected" in html


def test_an_htmx_request_for_the_queue_returns_only_the_card(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("review_queue", args=[dataset.project_id, dataset.pk])

    fragment = client.get(url, {"after": queue[0].pk}, headers=HTMX).content.decode()
    full_page = client.get(url).content.decode()

    assert "<html" not in fragment
    assert f'data-example-id="{queue[1].pk}"' in fragment
    assert "<html" in full_page
    assert f'data-example-id="{queue[0].pk}"' in full_page


def test_a_review_without_htmx_redirects_back_to_the_queue(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    response = client.post(
        reverse("review_decide", args=[dataset.project_id, queue[0].pk]),
        {"action": "reject", "revision": queue[0].revision},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("review_queue", args=[dataset.project_id, dataset.pk])
    queue[0].refresh_from_db()
    assert queue[0].status == ExampleStatus.REJECTED


def test_an_unknown_review_action_is_refused_and_records_nothing(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    response = client.post(
        reverse("review_decide", args=[dataset.project_id, queue[0].pk]), {"action": "delete"}
    )
    assert response.status_code == 400
    assert "Unknown review action" in page_text(response)
    assert ReviewDecision.objects.count() == 0


# --- escaping ----------------------------------------------------------------------------------


@pytest.fixture
def hostile_version(dataset: Dataset, lead: User) -> DatasetVersion:
    """A frozen version whose first example carries markup in the question and the answer."""
    Example.objects.create(
        dataset=dataset, messages=chat(f"Help {XSS}", f"{XSS} done"), status=ExampleStatus.APPROVED
    )
    for n in range(9):
        Example.objects.create(
            dataset=dataset, messages=chat(f"Ticket {n}", "{}"), status=ExampleStatus.APPROVED
        )
    return dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1, seed=1)


def assert_escaped(response) -> None:
    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert XSS_ESCAPED in html


def test_example_markup_is_escaped_on_the_review_page(
    client: Client, dataset: Dataset, lead: User
) -> None:
    hostile = Example.objects.create(dataset=dataset, messages=chat(f"Help {XSS}", f"{XSS} ok"))
    client.force_login(lead)
    url = reverse("review_queue", args=[dataset.project_id, dataset.pk])
    assert_escaped(client.get(url, {"example": hostile.pk}))
    assert_escaped(client.get(url, {"example": hostile.pk}, headers=HTMX))


def test_example_markup_is_escaped_on_the_dataset_and_version_pages(
    client: Client, dataset: Dataset, lead: User, hostile_version: DatasetVersion
) -> None:
    client.force_login(lead)
    assert_escaped(client.get(reverse("dataset_detail", args=[dataset.project_id, dataset.pk])))
    assert_escaped(
        client.get(reverse("version_detail", args=[dataset.project_id, hostile_version.pk]))
    )


def test_prompts_references_and_outputs_are_escaped_on_the_evaluation_page(
    client: Client, dataset: Dataset, lead: User, hostile_version: DatasetVersion, base_model
) -> None:
    run = EvalRun.objects.create(
        project=dataset.project,
        dataset_version=hostile_version,
        status=EvalStatus.SUCCEEDED,
        created_by=lead,
    )
    candidate = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base_model
    )
    item = hostile_version.items.get(position=0)  # the hostile example came first
    EvalResult.objects.create(
        candidate=candidate, item=item, output=f"{XSS}!", scores={"exact_match": 0.0}
    )
    client.force_login(lead)

    response = client.get(reverse("eval_detail", args=[dataset.project_id, run.pk]))

    assert_escaped(response)
    html = response.content.decode()
    assert html.count(XSS_ESCAPED) == 3  # prompt, reference and the candidate's output


# --- live status fragments ---------------------------------------------------------------------


def test_a_running_job_fragment_polls_and_shows_the_step(
    client: Client, world: World, lead: User
) -> None:
    TrainingMetric.objects.create(job=world.running_job, step=1, epoch=0.3, train_loss=2.5)
    client.force_login(lead)
    url = reverse("job_detail", args=[world.project.pk, world.running_job.pk])

    fragment = client.get(url, headers=HTMX).content.decode()

    assert "<html" not in fragment
    assert 'id="job-status"' in fragment
    assert 'hx-trigger="every 2s"' in fragment
    assert f'hx-get="{url}"' in fragment
    assert "step 1 of 3" in fragment
    # The chart comes with each poll, so the curve grows while the job runs.
    loss = page_charts(fragment)["loss-chart-data"]
    assert series_points(loss) == {"Training loss": [[1, 2.5]], "Validation loss": []}


def test_the_job_page_warns_of_overfitting_lists_checkpoints_and_registers_one(
    client: Client, world: World, lead: User
) -> None:
    job = world.running_job
    job.total_steps = 12
    job.save()
    for step in range(1, 13):
        val = {3: 1.0, 6: 1.1, 9: 1.2, 12: 1.3}.get(step)
        TrainingMetric.objects.create(
            job=job,
            step=step,
            epoch=step / 4,
            train_loss=2.0 - 0.1 * step,
            val_loss=val,
            learning_rate=1e-3 * (1 - step / 12),
            tokens_per_second=800.0,
        )
    Checkpoint.objects.create(job=job, step=6, path="/nowhere/step-6", val_loss=1.1)
    JobEvent.objects.create(job=job, message=XSS)
    client.force_login(lead)
    url = reverse("job_detail", args=[world.project.pk, job.pk])

    page = client.get(url).content.decode()

    assert 'id="overfitting"' in page and "risen for 3 evaluations" in page
    assert 'id="lr-chart"' in page and 'id="speed-chart"' in page
    assert page.count('class="register-checkpoint"') == 2
    assert XSS not in page and XSS_ESCAPED in page
    checkpoint = job.checkpoints.get(step=6)
    response = client.post(
        reverse("checkpoint_register", args=[world.project.pk, job.pk, checkpoint.pk])
    )
    assert response.status_code == 302
    version = ModelVersion.objects.get(checkpoint=checkpoint)
    assert version.adapter_dir == "/nowhere/step-6"
    after = client.get(url).content.decode()
    assert after.count('class="register-checkpoint"') == 1
    assert str(version) in after


def test_the_job_page_charts_the_stored_curves_with_axis_titles_units_and_legends(
    client: Client, world: World, lead: User
) -> None:
    job = world.running_job
    job.total_steps = 8
    job.save()
    stored = [  # step, train loss, validation loss (every 4 steps), learning rate, tokens/s
        (step, 2.0 - 0.1 * step, 1.5 - 0.05 * step if step % 4 == 0 else None, 2e-4 / step, 900.0)
        for step in range(1, 9)
    ]
    for step, train, val, rate, tokens in stored:
        TrainingMetric.objects.create(
            job=job,
            step=step,
            epoch=step / 8,
            train_loss=train,
            val_loss=val,
            learning_rate=rate,
            tokens_per_second=tokens,
        )
    parts = {"project": world.project, "version": world.version, "base_model": world.base_model}
    other = _job(parts | {"user": lead}, JobStatus.RUNNING)
    TrainingMetric.objects.create(job=other, step=1, epoch=0.1, train_loss=9.9)  # not this job's
    client.force_login(lead)

    charts = page_charts(
        client.get(reverse("job_detail", args=[world.project.pk, job.pk])).content.decode()
    )

    loss, lr, speed = charts["loss-chart-data"], charts["lr-chart-data"], charts["speed-chart-data"]
    assert series_points(loss) == {
        "Training loss": [[step, train] for step, train, _, _, _ in stored],
        "Validation loss": [[step, val] for step, _, val, _, _ in stored if val is not None],
    }
    assert series_points(lr) == {"Learning rate": [[s, rate] for s, _, _, rate, _ in stored]}
    assert series_points(speed) == {"Tokens per second": [[s, 900.0] for s in range(1, 9)]}
    assert loss["x"] == {"title": "Step", "format": "integer", "min": 0, "max": 8, "labels": []}
    assert loss["y"]["title"] == "Loss (cross-entropy per token)"
    assert (lr["y"]["title"], lr["y"]["format"]) == ("Learning rate", "scientific")
    assert speed["y"]["title"] == "Tokens per second"
    assert lr["x"]["title"] == speed["x"]["title"] == "Step"


def test_a_job_without_metrics_has_no_chart_yet(client: Client, world: World, lead: User) -> None:
    client.force_login(lead)

    page = client.get(reverse("job_detail", args=[world.project.pk, world.running_job.pk]))

    assert page_charts(page.content.decode()) == {}
    assert "Loss curves appear after the first step." in page.content.decode()


def test_a_finished_job_fragment_stops_polling(client: Client, world: World, lead: User) -> None:
    client.force_login(lead)
    finished = world.v1.training_job
    url = reverse("job_detail", args=[world.project.pk, finished.pk])

    fragment = client.get(url, headers=HTMX).content.decode()
    full_page = client.get(url).content.decode()

    assert "<html" not in fragment
    assert "Succeeded" in fragment
    assert "hx-trigger" not in fragment
    assert "hx-trigger" not in full_page
    assert 'id="evaluate-version"' in fragment


def test_an_evaluation_polls_while_queued_and_stops_when_finished(
    client: Client, world: World, lead: User
) -> None:
    run = EvalRun.objects.create(
        project=world.project, dataset_version=world.version, created_by=lead
    )
    client.force_login(lead)
    url = reverse("eval_detail", args=[world.project.pk, run.pk])

    queued = client.get(url, headers=HTMX).content.decode()
    run.status = EvalStatus.FAILED
    run.error = "RuntimeError: out of memory"
    run.save()
    failed = client.get(url, headers=HTMX).content.decode()

    assert "<html" not in queued
    assert 'hx-trigger="every 2s"' in queued
    assert "hx-trigger" not in failed
    assert "RuntimeError: out of memory" in failed
