"""Reads about projects (their members and the audit log) and about the workers (who listens
on which queue)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from .models import AuditEntry, Membership, Project, WorkerPresence


def project_members(project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )


def project_member(project: Project, user_id: int) -> Membership:
    """One member of the project by user id; 404 for anyone else."""
    return get_object_or_404(
        Membership.objects.select_related("user", "project"), project=project, user_id=user_id
    )


def audit_entries(project: Project) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(project=project).select_related("actor", "member")


# --- Worker presence: is anyone listening on a queue? ---


@dataclass(frozen=True)
class QueueAttendance:
    """Who consumes one Celery queue now, and when a worker was last heard on it."""

    queue: str
    workers: int  # live workers consuming the queue now
    last_seen: datetime.datetime | None  # the latest report on it, live or gone; None: never

    @property
    def attended(self) -> bool:
        return self.workers > 0


def known_queues() -> list[str]:
    """The queues the settings route work to: every one needs a worker."""
    routed = {
        route["queue"]
        for route in settings.CELERY_TASK_ROUTES.values()
        if isinstance(route, dict) and "queue" in route
    }
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_for_task(task_name: str) -> str:
    """The queue Celery sends ``task_name`` to, by the same routes the sender uses (the site's
    app, config.celery, which is the current one once the settings are loaded)."""
    return str(current_app.amqp.router.route({}, task_name)["queue"].name)


def queues_attendance(*, now: datetime.datetime | None = None) -> dict[str, QueueAttendance]:
    """Every known queue, and any other a worker reported, with its live workers and when one
    was last seen. A worker is live when it reported within FTPORTAL_WORKER_STALE_SECONDS and
    has not shut down."""
    now = now or timezone.now()
    live_since = now - datetime.timedelta(seconds=settings.FTPORTAL_WORKER_STALE_SECONDS)
    workers: dict[str, int] = dict.fromkeys(known_queues(), 0)
    last_seen: dict[str, datetime.datetime] = {}
    # One row per worker process and few processes: counting in Python works on SQLite too,
    # whose JSON fields cannot be filtered by containment.
    for row in WorkerPresence.objects.only("queues", "last_seen", "stopped_at"):
        live = row.stopped_at is None and row.last_seen >= live_since
        for queue in row.queues:
            workers[queue] = workers.get(queue, 0) + int(live)
            if queue not in last_seen or row.last_seen > last_seen[queue]:
                last_seen[queue] = row.last_seen
    return {
        queue: QueueAttendance(queue=queue, workers=count, last_seen=last_seen.get(queue))
        for queue, count in sorted(workers.items())
    }


def queue_machines(queue: str, *, now: datetime.datetime | None = None) -> list[str]:
    """The machines (host names) whose live workers consume ``queue``, else, while none is
    live, those that last did: where work sent to it will run, for figures measured per
    machine. A worker's node name is "name@host"; a job's ``worker`` is "host:pid"."""
    now = now or timezone.now()
    live_since = now - datetime.timedelta(seconds=settings.FTPORTAL_WORKER_STALE_SECONDS)
    live: set[str] = set()
    known: set[str] = set()
    for row in WorkerPresence.objects.only("hostname", "queues", "last_seen", "stopped_at"):
        if queue not in row.queues:
            continue
        machine = row.hostname.rpartition("@")[2]
        known.add(machine)
        if row.stopped_at is None and row.last_seen >= live_since:
            live.add(machine)
    return sorted(live or known)


def queue_attendance(queue: str, *, now: datetime.datetime | None = None) -> QueueAttendance:
    """Whether any worker listens on ``queue``, and since when none has been seen."""
    return queues_attendance(now=now).get(
        queue, QueueAttendance(queue=queue, workers=0, last_seen=None)
    )


def heartbeat_silence(
    last_seen: datetime.datetime | None,
    *,
    stale_after: float,
    now: datetime.datetime | None = None,
) -> int | None:
    """Whole seconds since a job's worker last wrote its heartbeat, when that is longer than
    ``stale_after`` seconds; None while the worker is on time (or nothing started yet)."""
    if last_seen is None:
        return None
    silent = ((now or timezone.now()) - last_seen).total_seconds()
    return int(silent) if silent > stale_after else None
