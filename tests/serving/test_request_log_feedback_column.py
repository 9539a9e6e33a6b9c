"""The feedback copied onto its request log row (``RequestLog.feedback_score`` and
``feedback_corrected``, what the browser's feedback filter reads): set when feedback is posted,
replaced with it, set on a row stored after its feedback (the log is written in batches), also
when the feedback arrives while that row's batch is being written, never from another
project's feedback, and backfilled by the migration from feedback posted before it."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

import pytest
from django.apps import apps
from django.db import connections
from django.utils import timezone

from ftportal.models import Project
from serving import request_log
from serving.models import ApplicationKey, Feedback, RequestLog, RequestStatus
from serving.request_log import RequestLogEntry, request_logs_write
from serving.selectors import FeedbackFilter, RequestLogFilters, request_logs_filtered
from serving.services import feedback_record

# Long enough for a blocked thread never to be mistaken for a finished one; a test that works
# never waits this long.
THREAD_WAIT_SECONDS = 10


def key_of(project: Project) -> ApplicationKey:
    key, _ = ApplicationKey.objects.get_or_create(
        project=project,
        name="support bot",
        defaults={"prefix": f"ftp_{project.pk:012x}", "rate_limit_per_minute": 60},
    )
    return key


def write_row(project: Project, request_id: str) -> None:
    request_logs_write(
        [
            RequestLogEntry(
                project_id=project.pk,
                requested_model="triage/production",
                messages=[{"role": "user", "content": "where is my parcel"}],
                output="shipping",
                status=RequestStatus.OK,
                latency_ms=9,
                request_id=request_id,
                created_at=timezone.now(),
            )
        ]
    )


def copied(request_id: str) -> tuple[float | None, bool]:
    row = RequestLog.objects.get(request_id=request_id)
    return row.feedback_score, row.feedback_corrected


def shown(project: Project, feedback: str) -> list[str]:
    rows = request_logs_filtered(project, RequestLogFilters(feedback=feedback))
    return [row.request_id for row in rows]


@pytest.mark.django_db
def test_posted_feedback_is_copied_onto_its_row_and_replaced_with_it(project: Project) -> None:
    write_row(project, "req_a")
    write_row(project, "req_b")
    assert copied("req_a") == (None, False)

    feedback_record(key=key_of(project), request_id="req_a", score=0.0, correction="billing")
    assert copied("req_a") == (0.0, True)
    assert shown(project, FeedbackFilter.DOWN) == ["req_a"]
    assert shown(project, FeedbackFilter.CORRECTED) == ["req_a"]

    # The user changes their mind: thumbs up, no correction.
    feedback_record(key=key_of(project), request_id="req_a", score=1.0)
    assert copied("req_a") == (1.0, False)
    assert copied("req_b") == (None, False)
    assert shown(project, FeedbackFilter.DOWN) == []
    assert shown(project, FeedbackFilter.CORRECTED) == []
    assert shown(project, FeedbackFilter.UP) == ["req_a"]
    assert shown(project, FeedbackFilter.NONE) == ["req_b"]


@pytest.mark.django_db
def test_feedback_posted_before_its_row_is_stored_is_on_the_row_when_it_arrives(
    project: Project,
) -> None:
    feedback_record(key=key_of(project), request_id="req_early", score=0.2, correction="refunds")
    assert not RequestLog.objects.exists()

    write_row(project, "req_early")
    write_row(project, "req_plain")

    assert copied("req_early") == (0.2, True)
    assert copied("req_plain") == (None, False)
    assert shown(project, FeedbackFilter.DOWN) == ["req_early"]


@pytest.mark.django_db
def test_another_projects_feedback_on_the_same_id_never_marks_the_row(project: Project) -> None:
    other = Project.objects.create(name="Other")
    feedback_record(key=key_of(other), request_id="req_shared", score=0.0, correction="theirs")
    write_row(project, "req_shared")
    feedback_record(key=key_of(other), request_id="req_shared", score=0.0, correction="again")

    assert copied("req_shared") == (None, False)
    assert shown(project, FeedbackFilter.ANY) == []


@pytest.mark.django_db(transaction=True)
def test_feedback_arriving_while_its_rows_batch_is_written_still_reaches_the_row(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that loses feedback without the writers' lock: the batch has looked for
    feedback (none yet) but not inserted; the feedback then finds no row. It must wait for the
    batch and copy itself onto the row once the row is committed."""
    key = key_of(project)
    looked, may_insert = threading.Event(), threading.Event()
    look_for_feedback = request_log._copy_feedback_posted_first

    def look_then_pause(rows: list[request_log.Row]) -> None:
        look_for_feedback(rows)
        looked.set()
        may_insert.wait(THREAD_WAIT_SECONDS)

    monkeypatch.setattr(request_log, "_copy_feedback_posted_first", look_then_pause)

    def in_thread(work: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    writer = in_thread(lambda: write_row(project, "req_racing"))
    assert looked.wait(THREAD_WAIT_SECONDS)
    poster = in_thread(
        lambda: feedback_record(key=key, request_id="req_racing", score=0.0, correction="billing")
    )
    poster.join(0.5)
    assert poster.is_alive(), "the feedback should wait for the batch being written"

    may_insert.set()
    writer.join(THREAD_WAIT_SECONDS)
    poster.join(THREAD_WAIT_SECONDS)

    assert not writer.is_alive() and not poster.is_alive()
    assert Feedback.objects.get().request_id == "req_racing"
    assert copied("req_racing") == (0.0, True)


@pytest.mark.django_db
def test_the_migration_copies_feedback_posted_before_it(project: Project) -> None:
    other = Project.objects.create(name="Other")
    for request_id in ("req_down", "req_up", "req_none", "req_theirs"):
        write_row(project, request_id)
    # Feedback stored as it was before the column existed: the rows know nothing of it.
    Feedback.objects.create(project=project, request_id="req_down", score=0.0, correction="x")
    Feedback.objects.create(project=project, request_id="req_up", score=0.9)
    Feedback.objects.create(project=other, request_id="req_theirs", score=0.0)
    assert shown(project, FeedbackFilter.ANY) == []

    migration = importlib.import_module("serving.migrations.0006_feedback_on_request_log")
    migration.copy_feedback_to_log(apps, None)

    assert copied("req_down") == (0.0, True)
    assert copied("req_up") == (0.9, False)
    assert copied("req_none") == (None, False)
    assert copied("req_theirs") == (None, False)
