"""Background imports through the real Celery worker: progress moves while the transaction is open,
final counts land on the batch, and a failed import stores nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from datasets.imports.services import import_progress
from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.models import Project
from ftportal.roles import Role

from ..conftest import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

EXAMPLES = 60_000
TIMEOUT_S = 240


def big_jsonl(count: int) -> bytes:
    system = {"role": "system", "content": "Classify the support ticket."}
    return "".join(
        json.dumps(
            {
                "messages": [
                    system,
                    {"role": "user", "content": f"Ticket {n}: the printer on floor {n % 7} jams"},
                    {"role": "assistant", "content": '{"category": "hardware"}'},
                ],
                "metadata": {"n": n},
            }
        )
        + "\n"
        for n in range(count)
    ).encode()


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead_client(make_member: Callable[[Role], User]) -> Client:
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    return client


def upload(client: Client, dataset: Dataset, name: str, data: bytes) -> ImportBatch:
    with override_settings(FTPORTAL_SYNC_IMPORT_MAX_BYTES=0):
        response = client.post(
            reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
            {"file": SimpleUploadedFile(name, data)},
        )
    batch = ImportBatch.objects.get(dataset=dataset, filename=name)
    assert response["Location"] == reverse("import_detail", args=[dataset.project_id, batch.pk])
    return batch


def test_a_big_file_imports_in_the_worker_with_progress_moving(
    celery_worker_process, dataset: Dataset, lead_client: Client
) -> None:
    data = big_jsonl(EXAMPLES)
    batch = upload(lead_client, dataset, "big.jsonl", data)
    stored = Path(batch.stored_path)
    assert stored.stat().st_size == len(data)

    seen: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        batch.refresh_from_db()
        progress = import_progress(batch)
        seen.append((batch.status, progress.percent, progress.imported))
        if progress.finished:
            break
        time.sleep(0.05)

    batch.refresh_from_db()
    assert batch.status == ImportStatus.SUCCEEDED, batch.failure_message
    running = [(percent, imported) for status, percent, imported in seen if status == "running"]
    # Figures from inside the open transaction: partway, and growing.
    assert any(0 < percent < 100 for percent, _ in running), seen[-20:]
    assert any(0 < imported < EXAMPLES for _, imported in running), seen[-20:]
    assert [imported for _, imported in running] == sorted(imported for _, imported in running)
    assert (batch.imported_count, batch.line_count) == (EXAMPLES, EXAMPLES)
    assert batch.bytes_read == batch.size_bytes == len(data)
    assert Example.objects.filter(dataset=dataset).count() == EXAMPLES
    assert Example.objects.get(dataset=dataset, source_line=EXAMPLES).metadata == {
        "n": EXAMPLES - 1
    }
    assert not stored.exists()
    page = lead_client.get(reverse("import_detail", args=[dataset.project_id, batch.pk]))
    assert f"Imported {EXAMPLES} example(s) from big.jsonl" in page.content.decode()


def test_a_failed_background_import_stores_nothing(
    celery_worker_process, dataset: Dataset, lead_client: Client
) -> None:
    data = big_jsonl(5000) + b'{"messages": [{"role": "robot", "content": "hi"}]}\n'
    batch = upload(lead_client, dataset, "broken.jsonl", data)

    wait_until(
        lambda: ImportBatch.objects.get(pk=batch.pk).status == ImportStatus.FAILED,
        timeout=TIMEOUT_S,
        what="the import to fail",
    )

    batch.refresh_from_db()
    assert "1 line(s) have errors; nothing was imported" in batch.failure_message
    assert batch.errors[0]["line"] == 5001
    assert batch.errors[0]["field"] == "messages[0].role"
    assert Example.objects.filter(dataset=dataset).count() == 0
    assert not Path(batch.stored_path).exists()
