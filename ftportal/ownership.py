"""Worker ownership of a row (a training job, an evaluation, an import): one mechanism for all.

A worker claims a queued row under its row lock (worker, started_at, heartbeat_at), beats a
heartbeat while it works, and releases the row when it is queued again or cancelled. A reaper
finds the rows silent since a cutoff and hands each one, locked, to its app's own decision
(queue it again, fail it, poll again); every state change stays in the app's services.

Rows that a worker may take over again count ``attempts``; the reaper gives up once
FTPORTAL_MAX_JOB_ATTEMPTS of them ended with a dead worker since a person last resumed the row
(``resumed_after_attempts``): a person who resumes a row asks for a fresh set of tries, while
``attempts`` itself keeps growing, so a stale worker's writes stay fenced off.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .heartbeat import Heartbeat, worker_name

logger = logging.getLogger(__name__)

Row = TypeVar("Row", bound=models.Model)


class Owned(Protocol):
    """The fields of a row that a worker owns while it runs."""

    worker: str
    started_at: datetime.datetime | None
    heartbeat_at: datetime.datetime | None


class Attempted(Owned, Protocol):
    """A row that a worker may take over again after its worker died."""

    attempts: int
    resumed_after_attempts: int


def ownership_claim(row: Owned, *, now: datetime.datetime | None = None) -> None:
    """Make this worker the owner of ``row`` (locked by the caller); the caller's transition
    saves it. started_at stays the first start's: a resumed row keeps its age."""
    now = now or timezone.now()
    row.worker = worker_name()
    row.started_at = row.started_at or now
    row.heartbeat_at = now


def attempt_claim(row: Attempted, *, now: datetime.datetime | None = None) -> int:
    """Start a new attempt at ``row`` on this worker; returns its number, which every later
    write of the attempt checks (each runner's ``_owned``): a superseded worker writes nothing."""
    row.attempts += 1
    ownership_claim(row, now=now)
    return row.attempts


def ownership_release(row: Owned) -> None:
    """The row has no living owner any more (queued again or cancelled): no heartbeat to judge."""
    row.heartbeat_at = None


def attempts_renew(row: Attempted) -> None:
    """A person resumes ``row``: the reaper's count of dead workers starts again from here."""
    row.resumed_after_attempts = row.attempts
    ownership_release(row)


def heartbeat_for(owned: Callable[[], QuerySet[Any]], *, name: str) -> Heartbeat:
    """A heartbeat that stamps the row while ``owned()`` (the row, as long as this worker's
    attempt owns it) still finds it; a superseded worker's beats change nothing."""
    return Heartbeat(
        lambda: owned().update(heartbeat_at=timezone.now()),
        settings.FTPORTAL_HEARTBEAT_SECONDS,
        name=name,
    )


def attempts_since_resume(row: Attempted) -> int:
    return row.attempts - row.resumed_after_attempts


def attempts_exhausted(row: Attempted) -> bool:
    """Whether the reaper gives up on ``row`` instead of queueing it again."""
    return attempts_since_resume(row) >= settings.FTPORTAL_MAX_JOB_ATTEMPTS


def silence_cutoff(now: datetime.datetime) -> datetime.datetime:
    """Rows whose last heartbeat is older than this have lost their worker."""
    return now - datetime.timedelta(seconds=settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS)


def silent_since(cutoff: datetime.datetime) -> Q:
    """No heartbeat since ``cutoff`` (a row claimed but never beaten counts from its start)."""
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)


def last_seen(row: Owned) -> str:
    """When the row's worker last said it was alive, for a reaper's message."""
    seen = row.heartbeat_at or row.started_at
    return timezone.localtime(seen).strftime("%H:%M:%S") if seen else "never"


def silent_too_long(now: datetime.datetime) -> Q:
    """No heartbeat for FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS up to ``now``."""
    return silent_since(silence_cutoff(now))


def worker_gone(row: Owned) -> str:
    """The start of every reaper message: whose worker went silent, and since when."""
    return f"Worker {row.worker or '?'} stopped responding (last heartbeat {last_seen(row)})"


def gave_up_error(row: Attempted) -> str:
    """Why the reaper failed ``row`` instead of queueing it again."""
    return f"{worker_gone(row)}; gave up after {attempts_since_resume(row)} attempts."


def silent_rows_reap(
    rows: QuerySet[Row],
    *,
    abandoned: Q,
    decide: Callable[[Row], object],
    after_commit: Callable[[Row], object] | None = None,
) -> list[int]:
    """Hand every row of ``rows`` matching ``abandoned`` to ``decide`` inside a transaction
    that holds its lock; ``after_commit`` then runs outside it. Returns the ids reaped."""
    candidates = list(rows.filter(abandoned).values_list("pk", flat=True))
    reaped = []
    for row_id in candidates:
        with transaction.atomic():
            # skip_locked: a row its worker is writing to right now is alive by definition;
            # the condition is checked again under the lock, as the worker may have beaten.
            row = rows.select_for_update(skip_locked=True).filter(abandoned, pk=row_id).first()
            if row is None:
                continue
            decide(row)
        if after_commit is not None:
            after_commit(row)
        reaped.append(row_id)
    return reaped
