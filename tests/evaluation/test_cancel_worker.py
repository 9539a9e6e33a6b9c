"""Cancelling a running evaluation stops a real Celery worker before its next batch: the answers
it scored stay stored under a cancelled run, nothing more is scored, and no report is made."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from evaluation import services
from evaluation.models import CandidateKind, EvalResult, EvalRun, EvalSplit, EvalStatus
from evaluation.runner import LOCAL_BATCH_SIZE
from evaluation.services import CandidateSpec, eval_run_cancel, eval_run_create
from evaluation.tasks import execute_eval_run
from ftportal.models import Project
from ftportal.roles import Role
from tests.conftest import start_celery_worker, stop_celery_worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# A queue only this test's worker listens to, so its log is the one that tells.
QUEUE = "eval-cancel-test"
ITEM_COUNT = 5 * LOCAL_BATCH_SIZE
TIMEOUT_S = 300


def many_items(project: Project, user: User) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name="cancel test")
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=ExampleStatus.APPROVED,
            messages=[
                {"role": "user", "content": f"Ticket {i}: my invoice is wrong"},
                {"role": "assistant", "content": "billing"},
            ],
        )
        for i in range(ITEM_COUNT)
    )
    return dataset_version_freeze(dataset=dataset, user=user, validation_fraction=0.2)


def scored(run: EvalRun) -> int:
    return EvalResult.objects.filter(candidate__run=run).count()


def test_a_running_evaluation_cancelled_stops_scoring_and_keeps_what_it_scored_as_cancelled(
    project: Project,
    make_member: Callable[[Role], User],
    base_model: BaseModel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = many_items(project, lead)
    with monkeypatch.context() as patched:
        # Queued below on this test's own queue instead of "inference".
        patched.setattr(services, "eval_run_dispatch", lambda run: None)
        run = eval_run_create(
            project=project,
            dataset_version=version,
            split=EvalSplit.ALL,
            candidates=[CandidateSpec(kind=CandidateKind.BASE, base_model=base_model)],
            user=lead,
            max_new_tokens=8,
        )
    log = tmp_path / "worker.log"
    worker = start_celery_worker(log, queues=QUEUE)
    try:
        execute_eval_run.apply_async((run.pk,), queue=QUEUE)
        wait_until(lambda: scored(run) >= LOCAL_BATCH_SIZE, timeout=TIMEOUT_S, what="a batch")

        eval_run_cancel(run=run, user=lead)
        # The cancel holds the run's row while it commits, as every batch's write does, so
        # nothing is written after this count.
        kept = scored(run)
        wait_until(
            lambda: f"Evaluation {run.pk} was cancelled; attempt 1 stops" in log.read_text(),
            timeout=TIMEOUT_S,
            what="the worker to stop",
        )
    finally:
        stop_celery_worker(worker, log)

    run.refresh_from_db()
    assert run.status == EvalStatus.CANCELLED
    assert run.cancelled_by == lead
    assert run.report == {}  # what was scored is not turned into a result
    assert scored(run) == kept
    assert LOCAL_BATCH_SIZE <= kept < ITEM_COUNT
    assert kept % LOCAL_BATCH_SIZE == 0  # whole batches, none written after the cancel
    candidate = run.candidates.get()
    assert candidate.metrics == {} and candidate.example_count == 0
