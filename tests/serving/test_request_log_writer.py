"""The request log's writer: every entry written exactly once in batches, nothing lost on a
clean shutdown, a full queue drops and counts, personal data masked when asked, retention
deletes only old rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from ftportal.models import Project
from serving.models import RequestLog, RequestStatus
from serving.request_log import (
    RequestLogEntry,
    RequestLogWriter,
    redact_text,
    request_log_close,
    request_log_dropped_count,
    request_log_enqueue,
    request_log_flush,
    request_logs_write,
)
from serving.services import request_logs_delete_expired


def entry(project: Project, n: int = 0, **overrides: object) -> RequestLogEntry:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "requested_model": "triage/production",
        "messages": [{"role": "user", "content": f"question {n}"}],
        "output": f"answer {n}",
        "status": RequestStatus.OK,
        "latency_ms": 12,
    }
    fields.update(overrides)
    return RequestLogEntry(**fields)  # type: ignore[arg-type]


class CountingWrites:
    """Writes to the database and records each batch's size."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, entries: list[RequestLogEntry]) -> int:
        with self.lock:
            self.batches.append(len(entries))
        return request_logs_write(entries)


@pytest.mark.django_db(transaction=True)
def test_every_entry_is_written_exactly_once_in_batches(project: Project) -> None:
    writes = CountingWrites()
    writer = RequestLogWriter(queue_rows=10_000, batch_rows=50, batch_ms=50, write=writes)
    sent = [entry(project, n) for n in range(400)]

    def send(part: list[RequestLogEntry]) -> None:
        for item in part:
            assert writer.enqueue(item)

    threads = [threading.Thread(target=send, args=(sent[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(timeout=30)

    stored = list(RequestLog.objects.values_list("request_id", flat=True))
    assert sorted(stored) == sorted(item.request_id for item in sent)
    assert sum(writes.batches) == 400 and max(writes.batches) <= 50
    assert len(writes.batches) < 400  # batched, not a row at a time
    assert writer.dropped == 0
    writer.close()


@pytest.mark.django_db(transaction=True)
def test_a_clean_shutdown_writes_everything_still_queued(project: Project) -> None:
    # A long batch window: without the close, nothing would be written yet.
    writer = RequestLogWriter(queue_rows=10_000, batch_rows=100_000, batch_ms=60_000)
    sent = [entry(project, n) for n in range(250)]
    for item in sent:
        writer.enqueue(item)

    writer.close(timeout=30)

    assert RequestLog.objects.count() == 250
    assert not writer.enqueue(entry(project))  # closed: dropped and counted
    assert writer.dropped == 1


@pytest.mark.django_db(transaction=True)
def test_the_process_writer_flushes_and_closes(project: Project) -> None:
    request_log_close()
    try:
        for n in range(30):
            assert request_log_enqueue(entry(project, n))
        assert request_log_flush(timeout=30)
        assert RequestLog.objects.count() == 30
        assert request_log_dropped_count() == 0
    finally:
        request_log_close()


@pytest.mark.django_db(transaction=True)
def test_a_full_queue_drops_and_counts(project: Project) -> None:
    blocked = threading.Event()

    def stuck_write(entries: list[RequestLogEntry]) -> int:
        blocked.wait(30)
        return request_logs_write(entries)

    writer = RequestLogWriter(queue_rows=5, batch_rows=1, batch_ms=10, write=stuck_write)
    accepted = [writer.enqueue(entry(project, n)) for n in range(20)]
    # One row may be in the stuck write and five queued; the rest are dropped, never waited on.
    assert 5 <= sum(accepted) <= 6
    assert writer.dropped == 20 - sum(accepted)
    blocked.set()
    writer.close(timeout=30)
    assert RequestLog.objects.count() == sum(accepted)


def test_redaction_masks_personal_data() -> None:
    text, changed = redact_text("mail jane.doe@example.com or call +44 20 7946 0958 today")
    assert changed
    assert "jane.doe" not in text and "7946" not in text
    assert "[pii_email]" in text and "[pii_phone]" in text
    assert redact_text("nothing personal") == ("nothing personal", False)


@pytest.mark.django_db
@pytest.mark.parametrize("redact", [True, False])
def test_pii_is_masked_before_storage_only_when_the_setting_is_on(
    project: Project, redact: bool
) -> None:
    with override_settings(FTPORTAL_REQUEST_LOG_REDACT_PII=redact):
        request_logs_write(
            [
                entry(
                    project,
                    messages=[{"role": "user", "content": "I am jane.doe@example.com"}],
                    output="Card 4111 1111 1111 1111 noted",
                )
            ]
        )
    row = RequestLog.objects.get()
    stored = f"{row.messages} {row.output}"
    assert ("jane.doe@example.com" in stored) is not redact
    assert ("4111 1111 1111 1111" in stored) is not redact
    assert row.redacted is redact


@pytest.mark.django_db
def test_an_unpriced_request_is_unknown_not_zero(project: Project) -> None:
    from decimal import Decimal

    request_logs_write([entry(project, 1), entry(project, 2, cost=Decimal("0.00042"))])
    costs = dict(RequestLog.objects.values_list("output", "cost"))
    known = dict(RequestLog.objects.values_list("output", "cost_known"))
    assert costs == {"answer 1": None, "answer 2": Decimal("0.00042000")}
    assert known == {"answer 1": False, "answer 2": True}


@pytest.mark.django_db
@override_settings(FTPORTAL_REQUEST_LOG_RETENTION_DAYS=30)
def test_retention_deletes_only_old_rows(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.services.RETENTION_DELETE_CHUNK_ROWS", 3)
    now = timezone.now()
    old = [entry(project, n, created_at=now - timedelta(days=31, minutes=n)) for n in range(7)]
    young = [entry(project, n, created_at=now - timedelta(days=29)) for n in range(10, 14)]
    request_logs_write(old + young)

    assert request_logs_delete_expired(now=now) == 7

    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(
        item.request_id for item in young
    )


@pytest.mark.django_db
@override_settings(FTPORTAL_REQUEST_LOG_RETENTION_DAYS=30)
def test_retention_deletes_every_projects_old_rows_and_keeps_their_young_ones(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.services.RETENTION_DELETE_CHUNK_ROWS", 2)
    other = Project.objects.create(name="Other")
    now = timezone.now()
    request_logs_write(
        [
            entry(owner, n, created_at=now - timedelta(days=40, minutes=n))
            for owner in (project, other)
            for n in range(5)
        ]
        + [entry(owner, created_at=now - timedelta(days=1)) for owner in (project, other)]
    )

    assert request_logs_delete_expired(now=now) == 10

    left = RequestLog.objects.values_list("project_id", flat=True)
    assert sorted(left) == sorted([project.pk, other.pk])


@pytest.mark.django_db
@override_settings(FTPORTAL_REQUEST_LOG_RETENTION_DAYS=0)
def test_retention_zero_keeps_everything(project: Project) -> None:
    request_logs_write([entry(project, created_at=timezone.now() - timedelta(days=3650))])
    assert request_logs_delete_expired() == 0
    assert RequestLog.objects.count() == 1


def test_the_retention_task_is_on_the_beat_schedule() -> None:
    from django.conf import settings

    from serving.tasks import delete_expired_request_logs

    names = {item["task"] for item in settings.CELERY_BEAT_SCHEDULE.values()}
    assert delete_expired_request_logs.name in names


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_is_counted_and_the_writer_goes_on(project: Project) -> None:
    from django.db import DatabaseError

    calls: list[int] = []

    def failing_once(entries: list[RequestLogEntry]) -> int:
        calls.append(len(entries))
        if len(calls) == 1:
            raise DatabaseError("connection lost")
        return request_logs_write(entries)

    writer = RequestLogWriter(queue_rows=100, batch_rows=100, batch_ms=10, write=failing_once)
    writer.enqueue(entry(project, 1))
    assert writer.flush(timeout=30)
    writer.enqueue(entry(project, 2))
    writer.close(timeout=30)

    assert writer.dropped == 1
    assert list(RequestLog.objects.values_list("output", flat=True)) == ["answer 2"]


EXITING_PROCESS = """
import django
django.setup()
from serving.request_log import RequestLogEntry, request_log_enqueue
for n in range({rows}):
    assert request_log_enqueue(RequestLogEntry(
        project_id={project_id}, requested_model="triage/production",
        messages=[{{"role": "user", "content": "q"}}], status="ok", latency_ms=1,
    ))
# No flush: the process ends here, with the batch window still open.
"""


@pytest.mark.django_db(transaction=True)
def test_a_process_that_exits_normally_writes_everything_it_queued(project: Project) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    test_db = settings.DATABASES["default"]["NAME"]
    base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"{base_url}/{test_db}",
        "FTPORTAL_REQUEST_LOG_BATCH_MS": "60000",
        "FTPORTAL_REQUEST_LOG_BATCH_ROWS": "100000",
    }
    script = EXITING_PROCESS.format(rows=321, project_id=project.pk)
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        timeout=120,
    )

    assert finished.returncode == 0, finished.stderr.decode()
    assert RequestLog.objects.filter(project=project).count() == 321


@pytest.mark.django_db
def test_every_field_of_a_row_is_stored_as_given_odd_characters_and_all(project: Project) -> None:
    # The writer's insert (COPY on Postgres) converts each value the way its field does.
    odd = 'tab\there, newline\nthere, backslash \\ quote " nul-free emoji 🚀 and ñ'
    given = entry(
        project,
        messages=[{"role": "system", "content": odd}, {"role": "user", "content": "\\N"}],
        output=odd,
        status=RequestStatus.REFUSED,
        error="param: \\x00-free",
        latency_ms=4_000_000,
        prompt_tokens=7,
        completion_tokens=None,
        cost=Decimal("0.00012345"),
        caller_user="user\twith tab",
        experiment_arm="arm b",
        fallback_cause="",
        created_at=datetime(2026, 12, 6, 11, 30, 15, 123456, tzinfo=UTC),
    )

    assert request_logs_write([given]) == 1

    row = RequestLog.objects.get(request_id=given.request_id)
    assert row.messages == given.messages
    assert (row.output, row.error, row.caller_user) == (odd, "param: \\x00-free", "user\twith tab")
    assert (row.status, row.latency_ms) == (RequestStatus.REFUSED, 4_000_000)
    assert (row.prompt_tokens, row.completion_tokens) == (7, None)
    assert row.cost == Decimal("0.00012345") and row.cost_known
    assert row.created_at == given.created_at
    assert row.experiment_arm == "arm b" and row.feedback_score is None
    assert row.served_version_id is None and not row.redacted
