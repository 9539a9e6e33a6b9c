"""A real Celery worker reports which queues it consumes; once it is killed (SIGKILL, no
chance to say goodbye) its queue counts as unattended after the staleness window, and a clean
shutdown counts at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ftportal.models import WorkerPresence
from ftportal.selectors import queue_attendance
from tests.conftest import start_celery_worker, stop_celery_worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
# A queue of this test's own: the session's worker, if any, does not consume it.
QUEUE = "presence-test"
FAST_PRESENCE = {"FTPORTAL_WORKER_PRESENCE_SECONDS": "0.5"}


def test_a_worker_reports_its_queues_until_it_is_killed(tmp_path: Path, settings):
    settings.FTPORTAL_WORKER_STALE_SECONDS = 2
    log = tmp_path / "worker.log"
    worker = start_celery_worker(log, queues=QUEUE, extra_env=FAST_PRESENCE)
    try:
        # Recorded before the worker calls itself ready.
        row = WorkerPresence.objects.get(pid=worker.pid)
        assert row.queues == [QUEUE] and row.stopped_at is None
        assert queue_attendance(QUEUE).attended
        first_seen = row.last_seen
        wait_until(
            lambda: WorkerPresence.objects.get(pk=row.pk).last_seen > first_seen,
            timeout=10,
            what="the worker's next presence report",
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        stop_celery_worker(worker, log)

    wait_until(
        lambda: not queue_attendance(QUEUE).attended, timeout=10, what="the queue to go unattended"
    )
    attendance = queue_attendance(QUEUE)
    row.refresh_from_db()
    assert attendance.workers == 0 and attendance.last_seen == row.last_seen
    assert row.stopped_at is None  # it never said goodbye: only the silence tells


def test_a_worker_that_stops_cleanly_leaves_its_queue_unattended_at_once(tmp_path: Path):
    log = tmp_path / "worker.log"
    worker = start_celery_worker(log, queues=QUEUE, extra_env=FAST_PRESENCE)
    assert queue_attendance(QUEUE).attended
    stop_celery_worker(worker, log)  # SIGTERM: a warm shutdown

    row = WorkerPresence.objects.get(pid=worker.pid)
    assert row.stopped_at is not None
    assert not queue_attendance(QUEUE).attended
