"""Threads that prove a worker is alive: a job's heartbeat lets a reaper tell a slow worker
from a dead one; a worker's presence tells the web pages whether anyone listens on a queue."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from .models import WorkerPresence

logger = logging.getLogger(__name__)

# Rows of workers gone this long are deleted; younger ones still answer "last seen when".
PRESENCE_KEPT_FOR = datetime.timedelta(days=7)


def worker_name() -> str:
    """Which worker process holds a job or run: what a reaper's message names."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Calls ``touch`` (typically an UPDATE of heartbeat_at, conditional on the worker still
    owning the row) every ``interval`` seconds until the ``with`` block ends (or ``stop``), so
    that one long step is never mistaken for a dead worker."""

    def __init__(self, touch: Callable[[], object], interval: float, name: str) -> None:
        self.touch = touch
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.touch()
        finally:
            connection.close()  # this thread's own connection


def worker_presence_record(
    *, name: str, hostname: str, pid: int, queues: Iterable[str], now: datetime.datetime
) -> None:
    """Say that this worker process consumes ``queues`` as of ``now``; forget workers gone
    for longer than PRESENCE_KEPT_FOR."""
    WorkerPresence.objects.update_or_create(
        name=name,
        defaults={
            "hostname": hostname,
            "pid": pid,
            "queues": sorted(set(queues)),
            "last_seen": now,
            "stopped_at": None,
        },
        create_defaults={
            "hostname": hostname,
            "pid": pid,
            "queues": sorted(set(queues)),
            "last_seen": now,
            "started_at": now,
        },
    )
    WorkerPresence.objects.filter(last_seen__lt=now - PRESENCE_KEPT_FOR).delete()


def worker_presence_stop(*, name: str, now: datetime.datetime) -> None:
    """A clean shutdown: the worker's queues count as unattended at once."""
    WorkerPresence.objects.filter(name=name).update(last_seen=now, stopped_at=now)


def _consumed_queues(consumer: Any) -> list[str]:
    """The queues the worker consumes now (a control command can add or cancel one)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        return [queue.name for queue in task_consumer.queues]
    return list(consumer.app.amqp.queues.consume_from)


class WorkerPresenceReporter:
    """Records the worker's presence once when it is ready, then from a thread every
    FTPORTAL_WORKER_PRESENCE_SECONDS. Started and stopped by Celery's worker signals
    (worker_presence_signals_connect)."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.hostname = str(consumer.hostname)
        self.name = f"{self.hostname}:{os.getpid()}"
        self._heartbeat = Heartbeat(
            self._report, settings.FTPORTAL_WORKER_PRESENCE_SECONDS, name="worker-presence"
        )

    def start(self) -> None:
        self._report()
        self._heartbeat.start()

    def stop(self) -> None:
        self._heartbeat.stop()
        try:
            worker_presence_stop(name=self.name, now=timezone.now())
        except DatabaseError:
            logger.exception("Could not record that worker %s stopped", self.name)
        finally:
            connection.close()

    def _report(self) -> None:
        # A database restart or a network blip must not end the reports for good: drop a
        # broken connection and try again at the next beat.
        try:
            close_old_connections()
            worker_presence_record(
                name=self.name,
                hostname=self.hostname,
                pid=os.getpid(),
                queues=_consumed_queues(self.consumer),
                now=timezone.now(),
            )
        except DatabaseError:
            logger.exception("Could not record the presence of worker %s", self.name)
            connection.close()


# The worker process's presence reporter, between ready and shutdown.
_presence: dict[str, WorkerPresenceReporter] = {}


def _start_reporting_presence(sender: Any, **kwargs: Any) -> None:
    reporter = WorkerPresenceReporter(sender)
    reporter.start()
    _presence["reporter"] = reporter


def _stop_reporting_presence(sender: Any, **kwargs: Any) -> None:
    reporter = _presence.pop("reporter", None)
    if reporter is not None:
        reporter.stop()


def worker_presence_signals_connect() -> None:
    """Report presence from worker_ready to worker_shutdown (called from FtportalConfig.ready,
    which a worker runs before it is ready)."""
    worker_ready.connect(_start_reporting_presence, dispatch_uid="ftportal.presence.start")
    worker_shutdown.connect(_stop_reporting_presence, dispatch_uid="ftportal.presence.stop")
