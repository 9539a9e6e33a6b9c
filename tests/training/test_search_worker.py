"""A search through a real Celery worker with real training of the local model: each trial's
end queues the next, every validation pass measures label accuracy, and the search registers
its best trial alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.conftest import wait_until
from tests.factories import label_set_version
from training.models import JobStatus, SearchStatus, TrainingSearch
from training.searches import training_search_create
from training.selectors import trial_result

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
SEARCH_TIMEOUT_S = 600


def test_a_search_trains_each_trial_and_registers_the_best(
    celery_worker_process: object,
    project: Project,
    make_member: Callable[[Role], User],
    base_model: BaseModel,
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = label_set_version(project, lead, count=24)

    search = training_search_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=lead,
        budget_minutes=60,
        trial_count=2,
        hyperparameters={
            "max_steps": 4,
            "batch_size": 4,
            "eval_every_steps": 2,
            "checkpoint_every_steps": 2,
        },
        model_name="triage-search",
    )

    def ended() -> bool:
        search.refresh_from_db()
        return search.is_finished

    wait_until(ended, timeout=SEARCH_TIMEOUT_S, what="the search")
    trials = list(search.trials.order_by("id"))
    assert [trial.status for trial in trials] == [JobStatus.SUCCEEDED] * 2, [
        trial.error for trial in trials
    ]
    assert search.status == SearchStatus.SUCCEEDED, search.outcome
    assert [trial.hyperparameters["learning_rate"] for trial in trials] == [5e-4, 1e-3]
    for trial in trials:
        points = [
            (step, accuracy)
            for step, accuracy in trial.metrics.values_list("step", "val_accuracy")
            if accuracy is not None
        ]
        assert [step for step, _ in points] == [2, 4]
        assert all(0 <= accuracy <= 1 for _, accuracy in points)
        assert trial.val_accuracy in [accuracy for _, accuracy in points]
    results = [trial_result(trial) for trial in trials]
    best = max(results, key=lambda result: result.rank_key)
    assert search.best_job == best.job
    registered = ModelVersion.objects.filter(training_job__in=trials)
    assert [version.training_job for version in registered] == [best.job]
    assert TrainingSearch.objects.get(pk=search.pk).outcome == "All 2 trials ran."
