"""Ends imports whose worker went away, so that none stays "Importing" forever.

A worker import writes a heartbeat every FTPORTAL_HEARTBEAT_SECONDS (ftportal/heartbeat.py, as
training jobs and evaluations do); one silent for FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS fails with
the reason. Unlike a training job it is not queued again: its rows were never published, so
nothing is lost, and the user uploads the file again. An import left queued for
FTPORTAL_IMPORT_ABANDON_SECONDS (its columns never chosen, or no worker ever took it) is ended
the same way. Either way the rows it wrote are deleted and its stored upload removed.
"""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ftportal.ownership import last_seen, silent_rows_reap, silent_too_long

from ..models import ImportBatch, ImportStatus
from .services import import_batch_finish, import_pending_rows_delete, import_upload_remove

logger = logging.getLogger(__name__)


def _abandoned(now: datetime.datetime) -> Q:
    queued = now - datetime.timedelta(seconds=settings.FTPORTAL_IMPORT_ABANDON_SECONDS)
    return (Q(status=ImportStatus.RUNNING) & silent_too_long(now)) | Q(
        status=ImportStatus.QUEUED, created_at__lt=queued
    )


def abandoned_imports_reap(*, now: datetime.datetime | None = None) -> list[int]:
    """Fail every import whose worker went silent or that waited too long; returns their ids."""
    return silent_rows_reap(
        ImportBatch.objects.all(),
        abandoned=_abandoned(now or timezone.now()),
        decide=lambda batch: import_batch_finish(
            batch, ImportStatus.FAILED, failure=_reason(batch)
        ),
        after_commit=_rows_remove,
    )


def _rows_remove(batch: ImportBatch) -> None:
    # After the commit: the batch is failed, so its worker (if it was only slow) publishes
    # nothing, and the rows it wrote can go in short transactions.
    import_pending_rows_delete(batch.pk)
    import_upload_remove(batch)
    logger.warning("Reaped import %s: %s", batch.pk, batch.failure_message)


def _reason(batch: ImportBatch) -> str:
    if batch.status == ImportStatus.QUEUED:
        hours = settings.FTPORTAL_IMPORT_ABANDON_SECONDS / 3600
        return (
            f"{batch.filename}: the import never started within {hours:g} h (its columns were"
            " not chosen, or no worker took it); nothing was imported. Upload the file again."
        )
    seen = last_seen(batch)
    return (
        f"{batch.filename}: the worker {batch.worker or '?'} stopped responding during the"
        f" import (last heartbeat {seen}); nothing was imported. Upload the file again."
    )
