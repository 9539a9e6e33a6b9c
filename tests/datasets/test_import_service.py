"""The streaming import: in the request and from a stored upload, all-or-nothing, file removed."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from datasets.formats import CsvMapping
from datasets.imports.services import (
    CHUNK_SIZE,
    ImportRejected,
    ImportRequest,
    ImportRoute,
    ImportSubmission,
    examples_import_upload,
    import_batch_create,
    import_batch_run,
    import_batch_set_mapping,
    import_progress,
    import_submit,
)
from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role

pytestmark = pytest.mark.django_db


def chat_line(n: int, **extra: object) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": f"question {n}"},
            {"role": "assistant", "content": f"answer {n}"},
        ],
        **extra,
    }


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def uploads(tmp_path: Path):
    with override_settings(FTPORTAL_UPLOADS_DIR=tmp_path):
        yield tmp_path


def stored(dataset: Dataset, user: User, data: bytes, name: str, **request: object) -> ImportBatch:
    return import_batch_create(
        dataset=dataset,
        upload=SimpleUploadedFile(name, data),
        user=user,
        request=ImportRequest(**request),  # type: ignore[arg-type]
    )


def test_a_stored_upload_imports_in_chunks_with_metadata_and_is_deleted(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    count = CHUNK_SIZE * 2 + 7
    data = jsonl(*(chat_line(n, metadata={"n": n}) for n in range(count)))
    batch = stored(dataset, lead, data, "big.jsonl")
    assert batch.status == ImportStatus.QUEUED
    assert Path(batch.stored_path).read_bytes() == data

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.SUCCEEDED
    assert (batch.imported_count, batch.line_count, batch.size_bytes) == (count, count, len(data))
    assert batch.format == "openai_chat"
    assert batch.finished_at is not None
    assert Example.objects.filter(dataset=dataset).count() == count
    last = Example.objects.get(dataset=dataset, source_line=count)
    assert last.metadata == {"n": count - 1}
    assert not Path(batch.stored_path).exists()
    assert list(uploads.iterdir()) == []
    progress = import_progress(batch)
    assert (progress.percent, progress.imported, progress.finished) == (100, count, True)


def test_a_bad_line_after_many_good_chunks_stores_no_example(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    data = jsonl(*(chat_line(n) for n in range(CHUNK_SIZE + 5))) + b"{broken\n"
    batch = stored(dataset, lead, data, "late-error.jsonl")

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    assert "1 line(s) have errors; nothing was imported" in batch.failure_message
    assert batch.errors[0]["line"] == CHUNK_SIZE + 6
    assert Example.objects.count() == 0
    assert batch.imported_count == 0
    assert list(uploads.iterdir()) == []


def test_valid_lines_only_keeps_the_good_lines_of_a_stored_upload(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    data = jsonl(chat_line(1)) + b"[1]\n" + jsonl(chat_line(3))
    batch = stored(dataset, lead, data, "mixed.jsonl", valid_lines_only=True)

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.SUCCEEDED
    assert sorted(e.source_line or 0 for e in Example.objects.all()) == [1, 3]
    assert [e["line"] for e in batch.errors] == [2]


def test_a_second_run_of_the_same_batch_does_nothing(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    batch = stored(dataset, lead, jsonl(chat_line(1)), "once.jsonl")
    import_batch_run(batch_id=batch.pk)

    again = import_batch_run(batch_id=batch.pk)

    assert again.status == ImportStatus.SUCCEEDED
    assert Example.objects.count() == 1


def test_a_csv_upload_imports_after_its_columns_are_chosen(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    data = b"ticket,category,team\nPrinter jammed,hardware,ops\nVPN down,network,it\n"
    batch = stored(dataset, lead, data, "tickets.csv")
    mapping = CsvMapping(
        input_column="ticket",
        output_column="category",
        system_prompt="Classify.",
        metadata_columns=("team",),
    )

    import_batch_set_mapping(batch=batch, mapping=mapping)
    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.SUCCEEDED
    assert batch.format == "csv"
    assert batch.options["csv"]["input_column"] == "ticket"
    first = Example.objects.get(source_line=2)
    assert first.messages == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "Printer jammed"},
        {"role": "assistant", "content": "hardware"},
    ]
    assert first.metadata == {"team": "ops"}


def test_a_mapping_naming_an_unknown_column_is_refused_and_changes_nothing(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    batch = stored(dataset, lead, b"ticket,category\na,b\n", "t.csv")

    with pytest.raises(ApplicationError, match="'label' is not in the header") as refused:
        import_batch_set_mapping(
            batch=batch, mapping=CsvMapping(input_column="ticket", output_column="label")
        )

    assert refused.value.extra["field"] == "output_column"
    batch.refresh_from_db()
    assert "csv" not in batch.options


def test_an_in_request_import_that_fails_stores_not_even_the_batch(
    dataset: Dataset, lead: User
) -> None:
    upload = SimpleUploadedFile("t.jsonl", jsonl(chat_line(1)) + b"\xff\n")

    with pytest.raises(ImportRejected) as rejected:
        examples_import_upload(dataset=dataset, upload=upload, user=lead, request=ImportRequest())

    assert rejected.value.extra["errors"][0]["line"] == 2
    assert ImportBatch.objects.count() == 0
    assert Example.objects.count() == 0


def test_a_gzip_is_never_parsed_in_the_request_but_imports_from_its_stored_upload(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    # Issue 13: a small gzip may hold a billion lines, so its size says nothing of its work.
    data = gzip.compress(jsonl(chat_line(1), chat_line(2)))
    with pytest.raises(ApplicationError, match="imported by the worker"):
        examples_import_upload(
            dataset=dataset,
            upload=SimpleUploadedFile("t.jsonl.gz", data),
            user=lead,
            request=ImportRequest(),
        )
    assert ImportBatch.objects.count() == 0

    batch = import_batch_run(batch_id=stored(dataset, lead, data, "t.jsonl.gz").pk)

    assert batch.status == ImportStatus.SUCCEEDED
    assert batch.imported_count == 2


def test_a_file_over_the_size_limit_is_refused_before_it_is_stored(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    with (
        override_settings(FTPORTAL_MAX_IMPORT_BYTES=10),
        pytest.raises(ApplicationError, match="over the import limit of 10 bytes"),
    ):
        stored(dataset, lead, jsonl(chat_line(1)), "big.jsonl")

    assert ImportBatch.objects.count() == 0
    assert list(uploads.iterdir()) == []


def test_an_archive_bomb_fails_the_import_and_stores_nothing(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    bomb = gzip.compress(jsonl(chat_line(1)) * 20_000)
    batch = stored(dataset, lead, bomb, "bomb.jsonl.gz")

    with override_settings(FTPORTAL_MAX_IMPORT_BYTES=200_000):
        batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    assert "expands to more than 200000 bytes" in batch.failure_message
    assert Example.objects.count() == 0


TRICKY = 'tab\there, "quotes", back\\slash \\N, new\nline, crlf\r\n, ünïcødé ✓ 🎉'


def test_awkward_text_is_stored_exactly(dataset: Dataset, lead: User, uploads: Path) -> None:
    record = {
        "messages": [
            {"role": "system", "content": TRICKY},
            {"role": "user", "content": TRICKY, "name": "tab\tname"},
            {"role": "assistant", "content": TRICKY, "weight": 1},
        ],
        "metadata": {"note": TRICKY, "nested": {"list": [1, None, True]}},
    }
    batch = stored(dataset, lead, jsonl(record), "tricky.jsonl")

    import_batch_run(batch_id=batch.pk)

    example = Example.objects.get(dataset=dataset)
    assert example.messages == record["messages"]
    assert example.metadata == record["metadata"]
    assert example.status == "pending"
    assert example.revision == 0
    assert example.import_batch_id == batch.pk


class RecordingCache:
    def __init__(self) -> None:
        self.values: list[dict] = []

    def set(self, key: str, value: dict, timeout: int) -> None:
        self.values.append(value)

    def get(self, key: str) -> None:
        return None

    def delete(self, key: str) -> None:
        pass


def test_progress_keeps_moving_through_a_file_of_errors(
    dataset: Dataset, lead: User, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingCache()
    monkeypatch.setattr("datasets.imports.services.cache", recorder)
    data = jsonl(chat_line(0)) + b"{bad\n" * (CHUNK_SIZE * 2)
    batch = stored(dataset, lead, data, "errors.jsonl")

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    lines = [value["lines"] for value in recorder.values]
    assert lines == sorted(lines)
    assert lines[-1] == CHUNK_SIZE * 2 + 1
    assert any(0 < n < CHUNK_SIZE * 2 + 1 for n in lines), lines
    assert recorder.values[-1]["errors"] == CHUNK_SIZE * 2
    assert Example.objects.count() == 0


def test_databases_without_copy_get_the_same_rows_through_bulk_create(
    dataset: Dataset, lead: User, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection

    record = chat_line(1, metadata={"k": "v"})
    record["messages"][1]["weight"] = 1  # type: ignore[index]
    monkeypatch.setattr(connection, "vendor", "sqlite")
    batch = stored(dataset, lead, jsonl(record), "plain.jsonl")

    import_batch_run(batch_id=batch.pk)

    example = Example.objects.get(dataset=dataset)
    assert example.messages == record["messages"]
    assert example.metadata == {"k": "v"}
    assert example.source_line == 1


def test_a_redelivered_task_leaves_a_running_import_to_the_reaper(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    # Issue 13: an import whose worker died ends failed, by the reaper (see test_import_reaper);
    # a redelivery of its task must not start a second run beside a worker that may be alive.
    batch = stored(dataset, lead, jsonl(chat_line(1), chat_line(2)), "again.jsonl")
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportStatus.RUNNING, worker="w:1")

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.RUNNING
    assert Example.objects.filter(dataset=dataset).count() == 0
    assert Path(batch.stored_path).exists()


# --- one submission service for the page and the API -------------------------------------------


def test_import_submit_routes_each_upload_the_one_way_page_and_api_share(
    dataset: Dataset, lead: User, uploads: Path, django_capture_on_commit_callbacks
) -> None:
    def submit(name: str, data: bytes, request: ImportRequest) -> ImportSubmission:
        upload = SimpleUploadedFile(name, data)
        return import_submit(dataset=dataset, upload=upload, user=lead, request=request)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        now = submit("small.jsonl", jsonl(chat_line(1)), ImportRequest())
        waiting = submit("sheet.csv", b"ticket,label\nhi,a\n", ImportRequest())
        assert queued == []  # neither the in-request import nor the waiting sheet is enqueued
        worker = submit("big.jsonl.gz", gzip.compress(jsonl(chat_line(2))), ImportRequest())
    assert (now.route, now.batch.status, now.batch.imported_count) == (
        ImportRoute.IMPORTED,
        ImportStatus.SUCCEEDED,
        1,
    )
    assert (waiting.route, waiting.batch.status) == (ImportRoute.NEEDS_COLUMNS, ImportStatus.QUEUED)
    assert (worker.route, worker.batch.status) == (ImportRoute.QUEUED, ImportStatus.QUEUED)
    assert len(queued) == 1  # the worker's task, enqueued once the batch committed
    assert Path(worker.batch.stored_path).exists()


def test_import_submit_keeps_a_sheet_whose_columns_do_not_fit_as_failed_and_drops_its_file(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    mapping = CsvMapping(input_column="nope", output_column="label")
    with pytest.raises(ApplicationError, match="nope"):
        import_submit(
            dataset=dataset,
            # Compressed, so stored for the worker: its header is checked once it is on disk.
            upload=SimpleUploadedFile("sheet.csv.gz", gzip.compress(b"ticket,label\nhi,a\n")),
            user=lead,
            request=ImportRequest(csv_mapping=mapping),
        )
    [batch] = ImportBatch.objects.all()
    assert batch.status == ImportStatus.FAILED
    assert not Path(batch.stored_path).exists()
