"""Finds evaluations whose worker went away and queues them again; the next worker resumes
from the answers already stored. After FTPORTAL_MAX_JOB_ATTEMPTS attempts the run fails with
the reason instead."""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import EvalRun, EvalStatus
from .runner import transition
from .services import eval_run_dispatch

logger = logging.getLogger(__name__)


def _silent_since(cutoff: datetime.datetime) -> Q:
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)


def abandoned_eval_runs_reap(*, now: datetime.datetime | None = None) -> list[int]:
    """Requeue or fail every running evaluation silent for too long; returns their ids."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS)
    silent = EvalRun.objects.filter(_silent_since(cutoff), status=EvalStatus.RUNNING)
    return [run_id for run_id in silent.values_list("pk", flat=True) if _reap(run_id, cutoff)]


def _reap(run_id: int, cutoff: datetime.datetime) -> bool:
    with transaction.atomic():
        # skip_locked: a run its worker is writing to right now is alive by definition.
        run = (
            EvalRun.objects.select_for_update(skip_locked=True)
            .filter(_silent_since(cutoff), pk=run_id, status=EvalStatus.RUNNING)
            .first()
        )
        if run is None:
            return False
        last_seen = run.heartbeat_at or run.started_at
        seen = timezone.localtime(last_seen).strftime("%H:%M:%S") if last_seen else "never"
        if run.attempts - run.resumed_after_attempts >= settings.FTPORTAL_MAX_JOB_ATTEMPTS:
            transition(
                run,
                EvalStatus.FAILED,
                error=f"Worker {run.worker or '?'} stopped responding (last heartbeat {seen}); "
                f"gave up after {run.attempts - run.resumed_after_attempts} attempts.",
            )
        else:
            transition(run, EvalStatus.QUEUED, heartbeat_at=None)
            transaction.on_commit(lambda: eval_run_dispatch(run))
        logger.warning("Reaped evaluation %s (last heartbeat %s)", run.pk, seen)
        return True
