"""Finds evaluations whose worker went away and queues them again; the next worker resumes
from the answers already stored. After FTPORTAL_MAX_JOB_ATTEMPTS attempts the run fails with
the reason instead."""

from __future__ import annotations

import datetime
import logging

from django.db import transaction
from django.utils import timezone

from ftportal import ownership

from .models import EvalRun, EvalStatus
from .services import eval_run_dispatch, transition

logger = logging.getLogger(__name__)


def abandoned_eval_runs_reap(*, now: datetime.datetime | None = None) -> list[int]:
    """Requeue or fail every running evaluation silent for too long; returns their ids."""
    now = now or timezone.now()
    return ownership.silent_rows_reap(
        EvalRun.objects.filter(status=EvalStatus.RUNNING),
        abandoned=ownership.silent_too_long(now),
        decide=_reap,
    )


def _reap(run: EvalRun) -> None:
    seen = ownership.last_seen(run)
    if ownership.attempts_exhausted(run):
        transition(run, EvalStatus.FAILED, error=ownership.gave_up_error(run))
    else:
        ownership.ownership_release(run)
        transition(run, EvalStatus.QUEUED)
        transaction.on_commit(lambda: eval_run_dispatch(run))
    logger.warning("Reaped evaluation %s (last heartbeat %s)", run.pk, seen)
