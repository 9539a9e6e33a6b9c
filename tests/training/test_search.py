"""A search over training settings within a time budget (training.searches): its trials run
one after another while the budget lasts, each is an ordinary job, and only the best one by
the validation metric is registered. The trainer here is a stand-in whose figures depend on
the learning rate, so that which trial wins is known; test_search_worker.py trains for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from providers.base import (
    CheckpointSaved,
    ProviderError,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
)
from tests.factories import frozen_version, label_set_version
from training import runner
from training.hooks import (
    ModelVersionKeeper,
    TrainedModel,
    model_version_keeper,
    register_model_version_keeper,
)
from training.models import JobStatus, SearchStatus, TrainingJob, TrainingSearch
from training.recipes import LABEL_SET_RECIPE
from training.runner import training_job_run
from training.searches import (
    TRIAL_PATIENCE,
    training_search_advance,
    training_search_cancel,
    training_search_create,
    trial_variations,
)
from training.selectors import best_trial, search_curves, search_trial_rows

pytestmark = pytest.mark.django_db

# What the stand-in trainer's validation label accuracy is at each learning rate.
ACCURACY_AT = {5e-4: 0.6, 1e-3: 0.8, 2.5e-4: 0.4}


class LearningRateFineTuner:
    """Trains nothing: reports two validation passes whose accuracy depends on the learning
    rate, saves a checkpoint at each, keeps the first (as early stopping would), and fails
    outright at the learning rates it is told to."""

    device = "cpu"

    def __init__(self, failing: Sequence[float] = ()) -> None:
        self.failing = set(failing)
        self.configs: list[TrainingConfig] = []

    def train(
        self,
        *,
        config: TrainingConfig,
        output_dir: Path,
        on_progress: Callable[[TrainingProgress], None],
        on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
        **_: Any,
    ) -> TrainingResult:
        self.configs.append(config)
        if config.learning_rate in self.failing:
            raise ProviderError("the stand-in was told to fail")
        accuracy = ACCURACY_AT[config.learning_rate]
        assert on_checkpoint is not None
        for step, step_accuracy in ((2, accuracy), (4, accuracy - 0.1)):
            on_progress(
                TrainingProgress(
                    step=step,
                    total_steps=4,
                    epoch=step / 4,
                    train_loss=0.5,
                    val_loss=1.0,
                    val_accuracy=step_accuracy,
                )
            )
            on_checkpoint(CheckpointSaved(step, output_dir / f"step-{step}", 0.5, 1.0))
        output_dir.mkdir(parents=True, exist_ok=True)
        return TrainingResult(
            adapter_dir=output_dir,
            steps=4,
            train_loss=0.5,
            val_loss=1.0,
            device="cpu",
            seconds=0.01,
            best_step=2,
            stopped_early=False,
            val_accuracy=accuracy,
        )


class RecordingKeeper:
    def __init__(self) -> None:
        self.succeeded: list[TrainedModel] = []

    def job_succeeded(self, trained: TrainedModel) -> None:
        self.succeeded.append(trained)

    def versions_losing_their_base(self, project: Project, *, today: Any) -> Sequence[Any]:
        return []


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def labelled(project: Project, lead: User) -> DatasetVersion:
    version = label_set_version(project, lead, count=40)
    return version


@pytest.fixture
def keeper() -> Iterator[RecordingKeeper]:
    registered: ModelVersionKeeper = model_version_keeper()
    recording = RecordingKeeper()
    register_model_version_keeper(recording)
    yield recording
    register_model_version_keeper(registered)


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> LearningRateFineTuner:
    stand_in = LearningRateFineTuner()
    monkeypatch.setattr(runner, "fine_tuner_for", lambda base: stand_in)
    return stand_in


def search_of(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel, **kwargs: Any
) -> TrainingSearch:
    return training_search_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=lead,
        budget_minutes=kwargs.pop("budget_minutes", 600),
        model_name="intents",
        **kwargs,
    )


def run_to_the_end(search: TrainingSearch) -> TrainingSearch:
    """What the worker does: run each queued trial, then advance the search, until it ends."""
    for _ in range(10):
        search.refresh_from_db()
        if search.is_finished:
            return search
        queued = search.trials.filter(status=JobStatus.QUEUED).order_by("id")
        for trial in queued:
            training_job_run(job_id=trial.pk)
        training_search_advance(search_id=search.pk)
    raise AssertionError(f"{search} did not end")


def test_the_trials_vary_the_learning_rate_then_the_rank_around_the_first() -> None:
    base = {"learning_rate": 5e-4, "lora_r": 16, "lora_alpha": 32}
    assert trial_variations(base, 4) == [
        {},
        {"learning_rate": 1e-3},
        {"learning_rate": 2.5e-4},
        {"lora_r": 8, "lora_alpha": 16},
    ]
    assert trial_variations(base, 2) == [{}, {"learning_rate": 1e-3}]
    # The doubled rate stays within the bound every job is checked against.
    assert trial_variations({"learning_rate": 8e-3, "lora_r": 1, "lora_alpha": 2}, 4)[1:] == [
        {"learning_rate": 1e-2},
        {"learning_rate": 4e-3},
        {"lora_r": 2, "lora_alpha": 4},
    ]


def test_a_search_queues_its_first_trial_with_the_recipe_and_early_stopping(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    search = search_of(project, lead, labelled, base_model, trial_count=3)

    assert search.status == SearchStatus.RUNNING
    assert search.trial_settings == [{}, {"learning_rate": 1e-3}, {"learning_rate": 2.5e-4}]
    (first,) = search.trials.all()
    assert first.status == JobStatus.QUEUED
    assert first.model_name == "intents"
    assert first.hyperparameters["learning_rate"] == LABEL_SET_RECIPE.defaults["learning_rate"]
    assert first.hyperparameters["early_stopping_patience"] == TRIAL_PATIENCE
    assert first.hyperparameters["validation_metric"] == "label_accuracy"
    # TRIAL_VALIDATION_PASSES over the whole trial, at the same steps in every trial.
    assert labelled.train_count == 32
    assert first.hyperparameters["eval_every_steps"] == 2  # 12 steps: 4 a epoch, 3 epochs
    assert search.hyperparameters["eval_every_steps"] == 2
    rows = search_trial_rows(search)
    assert [(row.number, row.learning_rate, row.job) for row in rows] == [
        (1, 5e-4, first),
        (2, 1e-3, None),
        (3, 2.5e-4, None),
    ]


def test_the_trials_run_one_after_another_and_only_the_best_is_registered(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
    keeper: RecordingKeeper,
) -> None:
    search = run_to_the_end(search_of(project, lead, labelled, base_model, trial_count=3))

    trials = list(search.trials.order_by("id"))
    assert [trial.status for trial in trials] == [JobStatus.SUCCEEDED] * 3
    assert [config.learning_rate for config in trainer.configs] == [5e-4, 1e-3, 2.5e-4]
    # The worker filled in the version's label set for the accuracy it measures.
    assert all(
        config.validation_labels == tuple(labelled.answer_contract["labels"])
        for config in trainer.configs
    )
    assert [trial.val_accuracy for trial in trials] == [0.6, 0.8, 0.4]
    assert search.status == SearchStatus.SUCCEEDED
    assert search.best_job == trials[1]
    assert search.outcome.startswith("All 3 trials ran")
    (registered,) = keeper.succeeded
    assert registered.job == trials[1]
    assert registered.checkpoint is not None and registered.checkpoint.step == 2
    assert (registered.val_loss, registered.train_loss) == (1.0, 0.5)
    assert [row.is_best for row in search_trial_rows(search)] == [False, True, False]
    chart = search_curves(search)
    assert [series.name for series in chart.series] == ["Trial 1", "Trial 2", "Trial 3"]
    assert chart.series[1].points == [(2, 0.8), (4, pytest.approx(0.7))]


def test_a_trial_starts_only_when_its_estimate_fits_in_what_is_left_of_the_budget(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
    keeper: RecordingKeeper,
) -> None:
    search = search_of(project, lead, labelled, base_model, trial_count=3, budget_minutes=30)
    (first,) = search.trials.all()
    training_job_run(job_id=first.pk)
    # The first trial took nearly the whole budget.
    TrainingJob.objects.filter(pk=first.pk).update(compute_seconds=29.9 * 60)

    search = training_search_advance(search_id=search.pk)

    assert search.trials.count() == 1
    assert search.status == SearchStatus.SUCCEEDED
    assert search.outcome.startswith("Stopped before trial 2: 0.1 minutes of the budget")
    assert search.best_job == first
    assert [trained.job for trained in keeper.succeeded] == [first]


def test_an_interval_the_lead_set_is_kept(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    search = search_of(project, lead, labelled, base_model, hyperparameters={"eval_every_steps": 5})
    assert search.trials.get().hyperparameters["eval_every_steps"] == 5


def test_a_budget_smaller_than_the_first_trial_is_refused_up_front(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    with pytest.raises(ApplicationError, match="the first trial alone is estimated") as raised:
        search_of(
            project,
            lead,
            frozen_version(project, lead, count=400),
            base_model,
            budget_minutes=1,
            hyperparameters={"epochs": 20},
        )
    assert raised.value.extra == {"field": "budget_minutes"}
    assert not TrainingSearch.objects.exists()
    assert not TrainingJob.objects.exists()


def test_a_failed_trial_is_passed_over_and_the_best_of_the_others_registered(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
    keeper: RecordingKeeper,
) -> None:
    trainer.failing = {1e-3}
    search = run_to_the_end(search_of(project, lead, labelled, base_model, trial_count=3))

    trials = list(search.trials.order_by("id"))
    assert [trial.status for trial in trials] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
    ]
    assert search.status == SearchStatus.SUCCEEDED
    assert search.best_job == trials[0]
    assert [trained.job for trained in keeper.succeeded] == [trials[0]]


def test_a_search_whose_trials_all_fail_fails_and_registers_nothing(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
    keeper: RecordingKeeper,
) -> None:
    trainer.failing = {5e-4, 1e-3}
    search = run_to_the_end(search_of(project, lead, labelled, base_model, trial_count=2))

    assert search.status == SearchStatus.FAILED
    assert search.best_job is None
    assert "No trial succeeded" in search.outcome
    assert keeper.succeeded == []


def test_cancelling_stops_the_trial_starts_no_more_and_keeps_the_best_finished(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
    keeper: RecordingKeeper,
) -> None:
    search = search_of(project, lead, labelled, base_model, trial_count=3)
    (first,) = search.trials.all()
    training_job_run(job_id=first.pk)
    search = training_search_advance(search_id=search.pk)
    second = search.trials.order_by("id").last()
    assert second is not None and second.status == JobStatus.QUEUED

    training_search_cancel(search=search)
    search = training_search_advance(search_id=search.pk)

    second.refresh_from_db()
    assert second.status == JobStatus.CANCELLED
    assert search.trials.count() == 2
    assert search.status == SearchStatus.CANCELLED
    assert search.outcome == "Cancelled by request."
    assert search.best_job == first
    assert [trained.job for trained in keeper.succeeded] == [first]
    with pytest.raises(ConflictError):
        training_search_cancel(search=search)


def test_advancing_while_a_trial_is_queued_changes_nothing(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    search = search_of(project, lead, labelled, base_model, trial_count=2)

    training_search_advance(search_id=search.pk)
    training_search_advance(search_id=search.pk)

    assert search.trials.count() == 1
    search.refresh_from_db()
    assert search.status == SearchStatus.RUNNING


def test_the_best_trial_is_the_higher_accuracy_then_the_lower_loss(
    project: Project,
    lead: User,
    labelled: DatasetVersion,
    base_model: BaseModel,
    trainer: LearningRateFineTuner,
) -> None:
    search = run_to_the_end(search_of(project, lead, labelled, base_model, trial_count=2))
    first, second = search.trials.order_by("id")
    best = best_trial([first, second])
    assert best is not None and best.job == second
    # At equal accuracy, the lower validation loss wins; at equal both, the earlier trial.
    TrainingJob.objects.filter(pk=second.pk).update(val_accuracy=0.6)
    second.refresh_from_db()
    tied = best_trial([first, second])
    assert tied is not None and tied.job == first
    second.checkpoints.filter(step=2).update(val_loss=0.9)
    lower_loss = best_trial([first, second])
    assert lower_loss is not None and lower_loss.job == second


def test_label_accuracy_needs_a_label_set(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    plain = frozen_version(project, lead)
    with pytest.raises(ApplicationError, match="label accuracy needs a label-set") as raised:
        search_of(
            project,
            lead,
            plain,
            base_model,
            hyperparameters={"validation_metric": "label_accuracy"},
        )
    assert raised.value.extra == {"field": "hyperparameters.validation_metric"}
