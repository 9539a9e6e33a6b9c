"""Datasets through the JSON API, without the worker: create one and import a file (whole or its
valid lines only), list examples by status and review them, freeze a version with a seeded split
and export it as chat JSONL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from datasets.models import Dataset, Example, ExampleStatus, ImportBatch, ReviewDecision
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import (
    TICKETS,
    api,
    approve_all,
    chat,
    create_dataset,
    frozen_version,
    import_file,
    jsonl,
    review,
    token_client,
    valid_file,
)
from tests.api.fixtures import lead_client_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


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
        api(project, f"dataset-versions/{version['id']}/export/"), {"split": "holdout"}
    )
    assert response.status_code == 400
    assert "split" in response.json()["error"]["fields"]
