"""A project's default system prompt goes in front of imported examples that bring none of their
own: through the API when the upload names no other, through the upload form where it is the
pre-filled value, for JSONL lines and CSV rows alike, in the worker as in the request; an upload
may name another or none; a project without a default imports exactly as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from datasets.imports.services import import_batch_run
from datasets.models import Dataset, Example, ImportBatch
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.factories import import_bytes

pytestmark = pytest.mark.django_db

DEFAULT = "Answer with one intent label."
OWN = "You route tickets."
LINES: list[dict[str, list[dict[str, object]]]] = [
    # No system message, and a weight on the answer that must stay on the answer.
    {
        "messages": [
            {"role": "user", "content": "card lost"},
            {"role": "assistant", "content": "lost_card", "weight": 0},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": OWN},
            {"role": "user", "content": "refund please"},
            {"role": "assistant", "content": "refund"},
        ]
    },
]
JSONL = "".join(json.dumps(line) + "\n" for line in LINES).encode()
CSV_FILE = b"ticket,intent\ncard lost,lost_card\nrefund please,refund\n"


@pytest.fixture(autouse=True)
def uploads(tmp_path: Path):
    with override_settings(FTPORTAL_UPLOADS_DIR=tmp_path):
        yield tmp_path


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    project.default_system_prompt = DEFAULT
    project.save()
    return Dataset.objects.create(project=project, name="intents")


def api_import(user: User, dataset: Dataset, name: str, data: bytes, **fields: object) -> Any:
    return token_client(user).post(
        f"/api/projects/{dataset.project_id}/datasets/{dataset.pk}/imports/",
        {"file": SimpleUploadedFile(name, data), **fields},
        format="multipart",
    )


def stored(dataset: Dataset) -> list[list[dict[str, object]]]:
    return [e.messages for e in Example.objects.filter(dataset=dataset).order_by("source_line")]


def test_the_api_puts_the_projects_default_before_examples_without_a_system_prompt(
    dataset: Dataset, lead: User
) -> None:
    response = api_import(lead, dataset, "intents.jsonl", JSONL)

    assert response.status_code == 201, response.content
    first, second = stored(dataset)
    assert first == [
        {"role": "system", "content": DEFAULT},
        {"role": "user", "content": "card lost"},
        {"role": "assistant", "content": "lost_card", "weight": 0},
    ]
    assert second == LINES[1]["messages"]  # its own system prompt is kept


@pytest.mark.parametrize(("named", "expected"), [("", None), ("Say the label.", "Say the label.")])
def test_an_upload_may_name_another_default_or_none(
    dataset: Dataset, lead: User, named: str, expected: str | None
) -> None:
    response = api_import(lead, dataset, "intents.jsonl", JSONL, default_system_prompt=named)

    assert response.status_code == 201, response.content
    first, second = stored(dataset)
    system = [m["content"] for m in first if m["role"] == "system"]
    assert system == ([expected] if expected else [])
    assert second == LINES[1]["messages"]


def test_a_project_without_a_default_imports_as_before(project: Project, lead: User) -> None:
    plain = Dataset.objects.create(project=project, name="plain")
    reference = Dataset.objects.create(project=project, name="reference")
    import_bytes(dataset=reference, data=JSONL, user=lead)  # the path that never had a default

    response = api_import(lead, plain, "intents.jsonl", JSONL)

    assert response.status_code == 201, response.content
    assert stored(plain) == stored(reference) == [line["messages"] for line in LINES]
    options = ImportBatch.objects.get(dataset=plain).options
    assert "default_system_prompt" not in options


def test_csv_rows_get_the_default_unless_the_mapping_gives_them_a_system_prompt(
    project: Project, dataset: Dataset, lead: User
) -> None:
    columns = {"input_column": "ticket", "output_column": "intent"}
    fixed = Dataset.objects.create(project=project, name="fixed")

    defaulted = api_import(lead, dataset, "intents.csv", CSV_FILE, **columns)
    own = api_import(lead, fixed, "intents.csv", CSV_FILE, system_prompt=OWN, **columns)

    assert defaulted.status_code == own.status_code == 201
    assert {m[0]["content"] for m in stored(dataset)} == {DEFAULT}
    assert {m[0]["content"] for m in stored(fixed)} == {OWN}


@override_settings(FTPORTAL_SYNC_IMPORT_MAX_BYTES=0)
def test_a_queued_import_keeps_the_default_it_was_uploaded_with(
    dataset: Dataset, lead: User, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        response = api_import(lead, dataset, "intents.jsonl", JSONL)
    assert response.status_code == 202
    Project.objects.filter(pk=dataset.project_id).update(default_system_prompt="Changed later.")

    import_batch_run(batch_id=response.json()["id"])

    assert stored(dataset)[0][0] == {"role": "system", "content": DEFAULT}


def test_the_upload_form_offers_the_default_and_imports_what_it_sends(
    client: Client, dataset: Dataset, lead: User
) -> None:
    Project.objects.filter(pk=dataset.project_id).update(default_system_prompt="Label <it>.")
    client.force_login(lead)
    url = reverse("dataset_detail", args=[dataset.project_id, dataset.pk])

    page = client.get(url).content.decode()
    assert "Label &lt;it&gt;.</textarea>" in page

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile("intents.jsonl", JSONL), "default_system_prompt": "Edited."},
    )

    assert response.status_code == 302
    assert stored(dataset)[0][0] == {"role": "system", "content": "Edited."}


def test_a_form_without_the_field_gets_the_projects_default(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)

    client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile("intents.jsonl", JSONL)},
    )

    assert stored(dataset)[0][0] == {"role": "system", "content": DEFAULT}


def test_the_column_page_says_which_default_rows_without_one_get(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile("intents.csv", CSV_FILE)},
    )
    batch = ImportBatch.objects.get(dataset=dataset)
    mapping = reverse("import_mapping", args=[dataset.project_id, batch.pk])

    page = client.get(mapping).content.decode()
    client.post(mapping, {"input_column": "ticket", "output_column": "intent"})

    assert 'id="mapping-default-system-prompt"' in page and DEFAULT in page
    assert {m[0]["content"] for m in stored(dataset)} == {DEFAULT}


def test_a_nul_in_the_uploads_default_is_refused_naming_it(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile("intents.jsonl", JSONL), "default_system_prompt": "a\x00b"},
    )

    assert response.status_code == 400
    assert "default_system_prompt: contains a NUL character" in response.content.decode()
    assert not Example.objects.filter(dataset=dataset).exists()
