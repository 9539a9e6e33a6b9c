"""Import pages and API: CSV column mapping, background imports with progress, who may do what."""

from __future__ import annotations

import json
from collections.abc import Callable
from html import unescape
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from datasets.imports.services import import_batch_run
from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
CSV_FILE = b"ticket,category,team\nPrinter jammed,hardware,ops\nVPN down,network,it\n"


def jsonl(count: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q{n}"},
                    {"role": "assistant", "content": f"a{n}"},
                ]
            }
        )
        + "\n"
        for n in range(count)
    ).encode()


def text(response) -> str:
    return unescape(response.content.decode())


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture(autouse=True)
def uploads(tmp_path: Path):
    with override_settings(FTPORTAL_UPLOADS_DIR=tmp_path):
        yield tmp_path


def post_file(client: Client, dataset: Dataset, name: str, data: bytes, **form: str):
    return client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile(name, data), **form},
    )


def mapping_url(batch: ImportBatch) -> str:
    return reverse("import_mapping", args=[batch.dataset.project_id, batch.pk])


def detail_url(batch: ImportBatch) -> str:
    return reverse("import_detail", args=[batch.dataset.project_id, batch.pk])


MAPPING_FORM = {
    "input_column": "ticket",
    "output_column": "category",
    "system_prompt": "Classify the ticket.",
    "metadata_columns": ["team"],
}


def test_a_csv_upload_asks_for_the_columns_then_imports_them(
    client: Client, dataset: Dataset, lead: User, uploads: Path
) -> None:
    client.force_login(lead)

    response = post_file(client, dataset, "tickets.csv", CSV_FILE)

    [batch] = ImportBatch.objects.all()
    assert response.status_code == 302
    assert response["Location"] == mapping_url(batch)
    page = client.get(mapping_url(batch))
    assert page.status_code == 200
    assert "Printer jammed" in text(page)
    assert '<option value="category"' in text(page)

    response = client.post(mapping_url(batch), MAPPING_FORM)

    assert response.status_code == 302
    assert response["Location"] == detail_url(batch)
    result = client.get(detail_url(batch))
    assert "Imported 2 example(s) from tickets.csv" in text(result)
    example = Example.objects.get(dataset=dataset, source_line=3)
    assert example.messages[0] == {"role": "system", "content": "Classify the ticket."}
    assert example.messages[2] == {"role": "assistant", "content": "network"}
    assert example.metadata == {"team": "it"}
    assert list(uploads.iterdir()) == []


def test_a_bad_mapping_is_shown_and_nothing_is_imported(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    post_file(client, dataset, "tickets.csv", CSV_FILE)
    [batch] = ImportBatch.objects.all()

    response = client.post(mapping_url(batch), {**MAPPING_FORM, "output_column": "ticket"})

    assert response.status_code == 400
    assert "must be different columns" in text(response)
    batch.refresh_from_db()
    assert batch.status == ImportStatus.QUEUED
    assert Example.objects.count() == 0


def test_a_csv_with_a_short_row_fails_naming_the_row_and_stores_nothing(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    post_file(client, dataset, "tickets.csv", CSV_FILE + b"lonely cell\n")
    [batch] = ImportBatch.objects.all()

    client.post(mapping_url(batch), MAPPING_FORM)

    result = client.get(detail_url(batch))
    assert "row 4 has 1 field, the header has 3" in text(result)
    assert "nothing was imported" in text(result)
    assert Example.objects.count() == 0


@override_settings(FTPORTAL_SYNC_IMPORT_MAX_BYTES=0)
def test_a_big_file_is_queued_and_the_page_polls_its_progress_until_done(
    client: Client,
    dataset: Dataset,
    lead: User,
    django_capture_on_commit_callbacks,
) -> None:
    client.force_login(lead)
    data = jsonl(50)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_file(client, dataset, "big.jsonl", data)

    [batch] = ImportBatch.objects.all()
    assert len(queued) == 1
    assert response["Location"] == detail_url(batch)
    assert (batch.status, batch.size_bytes) == (ImportStatus.QUEUED, len(data))
    # While the worker runs, its figures come through the cache.
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportStatus.RUNNING)
    cache.set(
        f"import-progress:{batch.pk}",
        {"bytes_read": len(data) // 2, "lines": 25, "imported": 25, "errors": 0},
    )
    polled = client.get(detail_url(batch), headers=HTMX)
    assert 'hx-trigger="every 1s"' in polled.content.decode()
    assert "50 %" in text(polled)
    assert "25 example(s) so far" in text(polled)
    assert "<html" not in polled.content.decode()

    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportStatus.QUEUED)
    import_batch_run(batch_id=batch.pk)
    done = client.get(detail_url(batch), headers=HTMX)
    assert "hx-trigger" not in done.content.decode()
    assert "Imported 50 example(s) from big.jsonl" in text(done)
    assert Example.objects.filter(dataset=dataset).count() == 50


def test_a_file_over_the_limit_is_refused_on_the_page(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    with override_settings(FTPORTAL_MAX_IMPORT_BYTES=100):
        response = post_file(client, dataset, "big.jsonl", jsonl(5))

    assert response.status_code == 400
    assert "over the import limit of 100 bytes" in text(response)
    assert ImportBatch.objects.count() == 0


# --- who may do what ---------------------------------------------------------------------------


@pytest.fixture
def waiting_csv(dataset: Dataset, lead: User) -> ImportBatch:
    client = Client()
    client.force_login(lead)
    post_file(client, dataset, "tickets.csv", CSV_FILE)
    return ImportBatch.objects.get()


def batch_state() -> list[tuple[object, ...]]:
    return sorted(ImportBatch.objects.values_list("id", "status", "options")) + [
        ("examples", Example.objects.count())
    ]


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ML_LEAD, Role.ADMIN])
def test_importing_roles_may_choose_the_columns(
    role: Role, make_member: Callable[[Role], User], waiting_csv: ImportBatch
) -> None:
    client = Client()
    client.force_login(make_member(role))

    response = client.post(mapping_url(waiting_csv), MAPPING_FORM)

    assert response.status_code == 302
    waiting_csv.refresh_from_db()
    assert waiting_csv.status == ImportStatus.SUCCEEDED


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_manager_may_not_choose_the_columns_and_nothing_changes(
    method: str, make_member: Callable[[Role], User], waiting_csv: ImportBatch
) -> None:
    client = Client()
    client.force_login(make_member(Role.MANAGER))
    before = batch_state()

    response = getattr(client, method)(mapping_url(waiting_csv), MAPPING_FORM)

    assert response.status_code == 403
    assert batch_state() == before


def test_a_manager_may_watch_an_import(
    make_member: Callable[[Role], User], waiting_csv: ImportBatch
) -> None:
    client = Client()
    client.force_login(make_member(Role.MANAGER))

    assert client.get(detail_url(waiting_csv)).status_code == 200


@pytest.mark.parametrize("url", [mapping_url, detail_url])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_non_member_gets_404_and_nothing_changes(
    url: Callable[[ImportBatch], str],
    method: str,
    make_member: Callable[..., User],
    waiting_csv: ImportBatch,
) -> None:
    other = Project.objects.create(name="Other")
    client = Client()
    client.force_login(make_member(Role.ADMIN, target=other))
    before = batch_state()

    response = getattr(client, method)(url(waiting_csv), MAPPING_FORM)

    assert response.status_code == 404
    assert batch_state() == before


# --- API ---------------------------------------------------------------------------------------


def api_import(client: APIClient, dataset: Dataset, name: str, data: bytes, **fields: object):
    return client.post(
        f"/api/projects/{dataset.project_id}/datasets/{dataset.pk}/imports/",
        {"file": SimpleUploadedFile(name, data), **fields},
        format="multipart",
    )


@override_settings(FTPORTAL_SYNC_IMPORT_MAX_BYTES=0)
def test_the_api_answers_202_for_a_big_file_and_reports_its_status(
    dataset: Dataset, lead: User, django_capture_on_commit_callbacks
) -> None:
    client = token_client(lead)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = api_import(client, dataset, "big.jsonl", jsonl(3))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert len(queued) == 1
    import_batch_run(batch_id=body["id"])

    status = client.get(f"/api/projects/{dataset.project_id}/imports/{body['id']}/")

    assert status.status_code == 200
    assert status.json()["status"] == "succeeded"
    assert status.json()["imported_count"] == 3
    assert status.json()["progress"] == {
        "bytes_read": len(jsonl(3)),
        "lines": 3,
        "imported": 3,
        "errors": 0,
        "percent": 100,
        "finished": True,
    }


def test_the_api_imports_a_small_csv_with_its_mapping_at_once(dataset: Dataset, lead: User) -> None:
    response = api_import(
        token_client(lead),
        dataset,
        "tickets.csv",
        CSV_FILE,
        input_column="ticket",
        output_column="category",
        metadata_columns=["team"],
    )

    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "csv"
    assert response.json()["imported_count"] == 2


def test_the_api_refuses_a_csv_without_its_mapping_naming_the_field(
    dataset: Dataset, lead: User
) -> None:
    response = api_import(token_client(lead), dataset, "tickets.csv", CSV_FILE)

    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["field"] == "input_column"
    assert ImportBatch.objects.count() == 0


def test_the_api_import_status_is_404_outside_the_project_and_manager_may_read_it(
    dataset: Dataset, lead: User, make_member: Callable[..., User]
) -> None:
    body = api_import(token_client(lead), dataset, "t.jsonl", jsonl(1)).json()
    url = f"/api/projects/{dataset.project_id}/imports/{body['id']}/"
    other = Project.objects.create(name="Other")

    assert token_client(make_member(Role.ADMIN, target=other)).get(url).status_code == 404
    assert token_client(make_member(Role.MANAGER)).get(url).status_code == 200


def test_a_manager_may_not_import_through_the_api_and_nothing_changes(
    dataset: Dataset, make_member: Callable[..., User]
) -> None:
    response = api_import(token_client(make_member(Role.MANAGER)), dataset, "t.csv", CSV_FILE)

    assert response.status_code == 403
    assert ImportBatch.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file is empty"),
        (b"ticket,caf\xe9\nx,y\n", "line 1 is not valid UTF-8 (byte 0xe9"),
        (b"ticket,ticket\nx,y\n", "names column 'ticket' twice"),
    ],
    ids=["empty", "not-utf8", "duplicate-column"],
)
def test_a_csv_whose_header_cannot_be_read_fails_with_the_reason(
    client: Client, dataset: Dataset, lead: User, uploads: Path, data: bytes, reason: str
) -> None:
    client.force_login(lead)
    post_file(client, dataset, "bad.csv", data)
    [batch] = ImportBatch.objects.all()

    response = client.get(mapping_url(batch), follow=True)

    assert reason in text(response)
    assert "Nothing was imported." in text(response)
    batch.refresh_from_db()
    assert batch.status == ImportStatus.FAILED
    assert list(uploads.iterdir()) == []
    assert Example.objects.count() == 0


@override_settings(FTPORTAL_SYNC_IMPORT_MAX_BYTES=0)
def test_the_api_refuses_a_big_csv_with_a_wrong_column_and_keeps_no_upload(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    response = api_import(
        token_client(lead),
        dataset,
        "tickets.csv",
        CSV_FILE,
        input_column="ticket",
        output_column="label",
    )

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "output_column"
    assert ImportBatch.objects.get().status == ImportStatus.FAILED
    assert list(uploads.iterdir()) == []
    assert Example.objects.count() == 0


def test_an_xlsx_upload_goes_through_the_column_choice_then_the_worker(
    client: Client, dataset: Dataset, lead: User, django_capture_on_commit_callbacks
) -> None:
    import io

    import openpyxl

    workbook = openpyxl.Workbook()
    for row in [["ticket", "category", "team"], ["Printer jammed", "hardware", "ops"]]:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    client.force_login(lead)

    post_file(client, dataset, "tickets.xlsx", buffer.getvalue())
    [batch] = ImportBatch.objects.all()
    assert "Printer jammed" in text(client.get(mapping_url(batch)))
    # Issue 13: a spreadsheet, however small, is never parsed in the request; the worker does.
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(mapping_url(batch), MAPPING_FORM)
    batch.refresh_from_db()
    assert (batch.status, len(queued)) == (ImportStatus.QUEUED, 1)

    batch = import_batch_run(batch_id=batch.pk)
    assert batch.status == ImportStatus.SUCCEEDED, batch.failure_message
    assert Example.objects.get(dataset=dataset).messages[1]["content"] == "Printer jammed"
