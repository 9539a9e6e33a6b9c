"""Issue 13, item 2, at the issue's size: a 1.5 MB gzip of 1.5 GiB of newlines, uploaded through
the API to the real worker. The request only queues it; the worker ends it at the lines cap in
seconds (the old code read empty lines for 9 to 10 minutes, inside one transaction), with
bounded memory, and reviewers keep writing meanwhile."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client

from .bombs import gzip_of_newlines

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Bounds generous enough for a two-core machine that other test runs keep busy.
QUICK_S = 5
IMPORT_ENDS_WITHIN_S = 120
BOUNDED_RSS_BYTES = 300 * 1024 * 1024


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    bomb = gzip_of_newlines()
    assert 1_400_000 < len(bomb) < 1_700_000  # the 1.5 MB
    return bomb


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


def long_open_transactions() -> int:
    """Other connections to the test database inside a transaction for over 3 s (on SQLite, a
    writing one would hold the only write lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND xact_start < now() - interval '3 seconds'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_a_gzip_bomb_is_queued_ended_at_the_lines_cap_and_reviewers_write_meanwhile(
    celery_worker_process: subprocess.Popen[bytes],
    gzip_bomb: bytes,
    dataset: Dataset,
    make_member: Callable[[Role], User],
) -> None:
    lead, reviewer = make_member(Role.ML_LEAD), make_member(Role.REVIEWER)
    example = Example.objects.create(
        dataset=dataset,
        messages=[
            {"role": "user", "content": "Printer jammed"},
            {"role": "assistant", "content": "hardware"},
        ],
    )
    reviewer_api = token_client(reviewer)
    worker = psutil.Process(celery_worker_process.pid)
    baseline_rss = worker.memory_info().rss

    started = time.monotonic()
    response = token_client(lead).post(
        f"/api/projects/{dataset.project_id}/datasets/{dataset.pk}/imports/",
        {"file": SimpleUploadedFile("bomb.jsonl.gz", gzip_bomb)},
        format="multipart",
    )
    assert time.monotonic() - started < QUICK_S
    assert response.status_code == 202, response.content
    batch = ImportBatch.objects.get(pk=response.json()["id"])
    upload = Path(batch.stored_path)

    comments_while_running = 0
    peak_rss = baseline_rss
    deadline = time.monotonic() + IMPORT_ENDS_WITHIN_S
    while batch.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
        assert time.monotonic() < deadline, "the import did not end in time"
        peak_rss = max(peak_rss, worker.memory_info().rss)
        if batch.status == ImportStatus.RUNNING:
            posted = time.monotonic()
            comment = reviewer_api.post(
                f"/api/projects/{dataset.project_id}/examples/{example.pk}/comments/",
                {"body": f"still here {comments_while_running}"},
                format="json",
            )
            assert comment.status_code == 201, comment.content
            assert time.monotonic() - posted < QUICK_S
            assert long_open_transactions() == 0
            comments_while_running += 1
        time.sleep(0.1)
        batch.refresh_from_db()

    assert comments_while_running > 0
    assert batch.status == ImportStatus.FAILED
    assert batch.failure_message == (
        "bomb.jsonl.gz: line 2000001: the file has more than 2000000 lines (blank lines count),"
        " the limit of one import; split it into smaller files; nothing was imported."
    )
    assert peak_rss - baseline_rss < BOUNDED_RSS_BYTES
    assert not upload.exists()
    assert Example._base_manager.filter(import_batch=batch).count() == 0
