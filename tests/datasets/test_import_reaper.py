"""Issue 13, items 2 and 4: an import writes its rows hidden, in short transactions, and
publishes them at the end; one whose worker went silent is failed by the reaper, its rows and
its upload removed. The kill -9 test runs a real worker and kills it mid-import."""

from __future__ import annotations

import datetime
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import override_settings
from django.utils import timezone

import datasets.imports.services as importing
from datasets.imports.reaper import abandoned_imports_reap
from datasets.imports.services import ImportRequest, import_batch_create, import_batch_run
from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from datasets.tasks import run_import
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.conftest import start_celery_worker, stop_celery_worker, wait_until

TIMEOUT = datetime.timedelta(seconds=90)  # FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS
# A queue only the worker we kill listens to, so the session's worker cannot take the import.
DOOMED_QUEUE = "import-recovery-test"


def chat_lines(count: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Ticket {n}: the printer on floor {n % 7} jams"},
                    {"role": "assistant", "content": "hardware"},
                ]
            }
        )
        + "\n"
        for n in range(count)
    ).encode()


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[Path]:
    with override_settings(FTPORTAL_UPLOADS_DIR=tmp_path / "uploads"):
        yield tmp_path / "uploads"


def stored(dataset: Dataset, lead: User, data: bytes, name: str = "t.jsonl") -> ImportBatch:
    return import_batch_create(
        dataset=dataset,
        upload=SimpleUploadedFile(name, data),
        user=lead,
        request=ImportRequest(),
    )


def running(batch: ImportBatch, *, heartbeat: datetime.datetime, rows: int = 3) -> ImportBatch:
    """What a worker leaves mid-import: the batch running under it, some rows written."""
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportStatus.RUNNING,
        worker="host:4242",
        started_at=heartbeat,
        heartbeat_at=heartbeat,
    )
    for n in range(rows):
        Example.objects.create(
            dataset=batch.dataset,
            messages=[{"role": "user", "content": f"q{n}"}],
            import_batch=batch,
            source_line=n + 1,
            import_pending=True,
        )
    cache.set(f"import-progress:{batch.pk}", {"bytes_read": 1, "lines": rows})
    batch.refresh_from_db()
    return batch


@pytest.mark.django_db
def test_rows_of_an_unfinished_import_are_hidden_from_everyone(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    running(stored(dataset, lead, chat_lines(3)), heartbeat=timezone.now())

    assert Example.objects.filter(dataset=dataset).count() == 0
    assert dataset.examples.count() == 0
    listed = token_client(lead).get(f"/api/projects/{dataset.project_id}/datasets/").json()
    [row] = listed["results"]
    assert (row["example_count"], row["pending_count"]) == (0, 0)
    assert Example._base_manager.filter(dataset=dataset).count() == 3


@pytest.mark.django_db
def test_the_reaper_fails_a_silent_import_and_removes_its_rows_and_upload(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    now = timezone.now()
    silent = running(stored(dataset, lead, chat_lines(3), "silent.jsonl"), heartbeat=now - TIMEOUT)
    alive = running(stored(dataset, lead, chat_lines(3), "alive.jsonl"), heartbeat=now)

    assert abandoned_imports_reap(now=now + datetime.timedelta(seconds=1)) == [silent.pk]

    silent.refresh_from_db()
    assert silent.status == ImportStatus.FAILED
    assert silent.failure_message.startswith(
        "silent.jsonl: the worker host:4242 stopped responding during the import"
    )
    assert "nothing was imported" in silent.failure_message
    assert Example._base_manager.filter(import_batch=silent).count() == 0
    assert not Path(silent.stored_path).exists()
    assert cache.get(f"import-progress:{silent.pk}") is None
    alive.refresh_from_db()
    assert alive.status == ImportStatus.RUNNING
    assert Path(alive.stored_path).exists()


@pytest.mark.django_db
def test_an_import_left_queued_too_long_is_abandoned_and_its_upload_removed(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    waiting = stored(dataset, lead, b"ticket,category\nPrinter,hw\n", "waiting.csv")
    fresh = stored(dataset, lead, b"ticket,category\nPrinter,hw\n", "fresh.csv")
    ImportBatch.objects.filter(pk=waiting.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=2)
    )

    assert abandoned_imports_reap() == [waiting.pk]

    waiting.refresh_from_db()
    assert waiting.status == ImportStatus.FAILED
    assert "the import never started within 24 h" in waiting.failure_message
    assert not Path(waiting.stored_path).exists()
    assert ImportBatch.objects.get(pk=fresh.pk).status == ImportStatus.QUEUED


@pytest.mark.django_db
def test_a_slow_worker_whose_import_was_reaped_publishes_nothing(
    dataset: Dataset, lead: User, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = stored(dataset, lead, chat_lines(importing.CHUNK_SIZE * 2))
    insert = importing._insert_examples

    def insert_then_get_reaped(batch: ImportBatch, parsed: list[object]) -> None:
        insert(batch, parsed)  # type: ignore[arg-type]
        # The worker stalls past the timeout after its first chunk; the reaper ends the import.
        abandoned_imports_reap(now=timezone.now() + TIMEOUT + TIMEOUT)

    monkeypatch.setattr(importing, "_insert_examples", insert_then_get_reaped)

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    assert "stopped responding" in batch.failure_message
    assert Example._base_manager.filter(dataset=dataset).count() == 0


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_a_file_is_parsed(
    dataset: Dataset, lead: User, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite an open transaction that has written holds the only write lock: every other
    # writer (a reviewer's comment) waits, then fails with "database is locked".
    batch = stored(dataset, lead, chat_lines(importing.CHUNK_SIZE * 3))
    in_transaction: list[bool] = []
    parse = importing.StreamParser.events

    def watched(self: importing.StreamParser) -> Iterator[object]:
        for event in parse(self):
            in_transaction.append(connection.in_atomic_block)
            yield event

    monkeypatch.setattr(importing.StreamParser, "events", watched)

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.SUCCEEDED, batch.failure_message
    assert len(in_transaction) == importing.CHUNK_SIZE * 3
    assert not any(in_transaction)
    assert Example.objects.filter(dataset=dataset).count() == importing.CHUNK_SIZE * 3


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_import_whose_worker_is_killed_is_reaped_failed_and_its_upload_removed(
    dataset: Dataset, lead: User, tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    env = {"FTPORTAL_HEARTBEAT_SECONDS": "0.5", "FTPORTAL_UPLOADS_DIR": str(uploads)}
    with override_settings(FTPORTAL_UPLOADS_DIR=uploads):
        batch = stored(dataset, lead, chat_lines(400_000), "big.jsonl")
    upload = Path(batch.stored_path)
    log = tmp_path / "doomed.log"
    doomed = start_celery_worker(log, queues=DOOMED_QUEUE, extra_env=env)
    try:
        run_import.apply_async((batch.pk,), queue=DOOMED_QUEUE)
        wait_until(
            lambda: Example._base_manager.filter(import_batch=batch).exists(),
            timeout=120,
            what="the worker to write the first rows",
        )
        os.kill(doomed.pid, signal.SIGKILL)  # no clean shutdown, no chance to report anything
        doomed.wait(timeout=10)
    finally:
        stop_celery_worker(doomed, log)
    batch.refresh_from_db()
    assert batch.status == ImportStatus.RUNNING  # what the page showed forever before
    assert upload.exists()

    reaped = abandoned_imports_reap(now=timezone.now() + TIMEOUT)

    assert reaped == [batch.pk]
    batch.refresh_from_db()
    assert batch.status == ImportStatus.FAILED
    assert f"the worker {batch.worker} stopped responding" in batch.failure_message
    assert Example._base_manager.filter(import_batch=batch).count() == 0
    assert not upload.exists()
