"""A small search over training settings within a time budget (TrainingSearch): its trials,
their order, when the next one starts, and which one is registered.

Each trial is an ordinary local job of the search (TrainingJob.search), so the job page, its
curves, checkpoints, costs and the reaper all apply to it unchanged. Trials run one after
another: when one ends (training.services.transition queues advance_training_search), the
next starts if its launch estimate fits in what is left of the budget, else the search ends.
Every trial stops early on the validation metric (label accuracy for a label set, else the
loss) and keeps its best step; the trial with the best metric is registered through the same
hook as a plain job's result, so its model version names its job and dataset version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.errors import ApplicationError, ConflictError
from ftportal.idempotency import Once, once_per_key, request_fingerprint
from ftportal.models import Project
from ftportal.state import state_change
from providers.base import step_plan

from .estimates import launch_estimate
from .hooks import TrainedModel, model_version_keeper
from .hyperparameters import HOSTED_PROVIDERS, NUMBER_BOUNDS, local_config
from .models import (
    SEARCH_TRANSITIONS,
    SearchStatus,
    TrainingJob,
    TrainingSearch,
)
from .recipes import job_hyperparameters
from .selectors import best_trial, search_spent_minutes
from .services import training_job_cancel, training_job_create

MIN_TRIALS = 2
MAX_TRIALS = 4
DEFAULT_TRIALS = 3
MAX_BUDGET_MINUTES = 24 * 60
# A trial stops after this many validation passes without a better metric, unless the lead
# set early stopping: a search tries settings, and a setting that stopped improving has said
# what it can.
TRIAL_PATIENCE = 2
# Validation passes a trial makes when the lead leaves the interval unset: enough for the
# patience above to stop a trial that peaked early (the interval scaled to the data gives 3 or
# 4 over a whole job), at the same steps in every trial, so their curves compare step by step.
TRIAL_VALIDATION_PASSES = 6
# The settings a trial may change; everything else is the lead's, shared by every trial.
SEARCHED_SETTINGS = ("learning_rate", "lora_r", "lora_alpha")


def trial_variations(base: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """What each of ``count`` trials changes, around ``base`` (the complete settings of the
    first trial, the recipe's with the lead's): the first changes nothing, then the learning
    rate doubled and halved (the setting LoRA results depend on most), then half the rank
    (a smaller adapter, less prone to learn ten examples a label by heart)."""
    learning_rate = float(base["learning_rate"])
    low, high = NUMBER_BOUNDS["learning_rate"]
    rank, alpha = int(base["lora_r"]), int(base["lora_alpha"])
    variations: list[dict[str, Any]] = [
        {},
        {"learning_rate": min(learning_rate * 2, high)},
        {"learning_rate": max(learning_rate / 2, low)},
        # The same alpha over rank, so the adapter's scale stays as it was.
        {"lora_r": max(rank // 2, 1), "lora_alpha": max(alpha // 2, 1)}
        if rank > 1
        else {"lora_r": 2, "lora_alpha": alpha * 2},
    ]
    return variations[:count]


def _trial_settings(
    version: DatasetVersion,
    base_model: BaseModel,
    shared: dict[str, Any],
    variations: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each trial's complete, checked settings; an error names the trial and the field."""
    settings: list[dict[str, Any]] = []
    for index, variation in enumerate(variations, start=1):
        unknown = sorted(set(variation) - set(SEARCHED_SETTINGS))
        if unknown:
            raise ApplicationError(
                f"trials[{index}]: a trial may change only {', '.join(SEARCHED_SETTINGS)}, "
                f"not {', '.join(unknown)}.",
                extra={"field": f"trials[{index}].{unknown[0]}"},
            )
        try:
            settings.append(job_hyperparameters(version, base_model, shared | variation))
        except ApplicationError as error:
            raise ApplicationError(
                f"trials[{index}]: {error.message}", extra={"field": f"trials[{index}]"}
            ) from error
    return settings


def training_search_launch(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    user: User,
    budget_minutes: int,
    idempotency_key: str = "",
    trial_count: int = DEFAULT_TRIALS,
    trials: Sequence[dict[str, Any]] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str = "",
) -> Once[TrainingSearch]:
    """training_search_create once per idempotency key, as training_job_launch does."""
    return once_per_key(
        project=project,
        user=user,
        scope="training_search",
        key=idempotency_key,
        fingerprint=request_fingerprint(
            {
                "dataset_version": dataset_version.pk,
                "base_model": base_model.key,
                "budget_minutes": budget_minutes,
                "trial_count": trial_count,
                "trials": list(trials or []),
                "hyperparameters": hyperparameters or {},
                "model_name": model_name.strip(),
            }
        ),
        create=lambda: training_search_create(
            project=project,
            dataset_version=dataset_version,
            base_model=base_model,
            user=user,
            budget_minutes=budget_minutes,
            trial_count=trial_count,
            trials=trials,
            hyperparameters=hyperparameters,
            model_name=model_name,
        ),
        load=lambda pk: TrainingSearch.objects.get(pk=pk, project=project),
    )


def training_search_create(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    user: User,
    budget_minutes: int,
    trial_count: int = DEFAULT_TRIALS,
    trials: Sequence[dict[str, Any]] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str = "",
) -> TrainingSearch:
    """A search with its first trial queued. ``trials`` names what each trial changes (the
    first usually nothing); without it, ``trial_count`` trials of trial_variations."""
    if base_model.provider in HOSTED_PROVIDERS:
        raise ApplicationError(
            f"A search trains on this installation's workers; {base_model.key} is trained by "
            "its provider, which chooses its own settings. Pick a local base model.",
            extra={"field": "base_model"},
        )
    if not 1 <= budget_minutes <= MAX_BUDGET_MINUTES:
        raise ApplicationError(
            f"budget_minutes: {budget_minutes} is outside 1 to {MAX_BUDGET_MINUTES}.",
            extra={"field": "budget_minutes"},
        )
    shared = {name: value for name, value in (hyperparameters or {}).items() if value != ""}
    searched = sorted(set(shared) & set(SEARCHED_SETTINGS))
    if trials is None:
        if not MIN_TRIALS <= trial_count <= MAX_TRIALS:
            raise ApplicationError(
                f"trial_count: {trial_count} is outside {MIN_TRIALS} to {MAX_TRIALS}.",
                extra={"field": "trial_count"},
            )
        first = job_hyperparameters(dataset_version, base_model, shared)
        variations = trial_variations(first, trial_count)
    else:
        if not MIN_TRIALS <= len(trials) <= MAX_TRIALS:
            raise ApplicationError(
                f"trials: {len(trials)} trials; a search runs {MIN_TRIALS} to {MAX_TRIALS}.",
                extra={"field": "trials"},
            )
        variations = [dict(trial) for trial in trials]
    if searched and trials is not None:
        raise ApplicationError(
            f"hyperparameters: {', '.join(searched)} is what the trials change; set it per "
            "trial, or leave the trials to the search.",
            extra={"field": f"hyperparameters.{searched[0]}"},
        )
    shared.setdefault("early_stopping_patience", TRIAL_PATIENCE)
    if shared.get("eval_every_steps") is None:
        shared["eval_every_steps"] = _trial_validation_interval(
            dataset_version, job_hyperparameters(dataset_version, base_model, shared)
        )
    settings = _trial_settings(dataset_version, base_model, shared, variations)
    _check_first_fits(dataset_version, base_model, settings[0], budget_minutes)
    with transaction.atomic():
        search = TrainingSearch.objects.create(
            project=project,
            dataset_version=dataset_version,
            base_model=base_model,
            model_name=model_name.strip() or f"{dataset_version.dataset.name}-ft",
            budget_minutes=budget_minutes,
            hyperparameters=shared,
            trial_settings=variations,
            created_by=user,
        )
        _trial_start(search, 0)
    return search


def _trial_validation_interval(version: DatasetVersion, settings: dict[str, Any]) -> int:
    plan = step_plan(version.train_count, local_config(settings))
    return max(1, math.ceil(plan.total_steps / TRIAL_VALIDATION_PASSES))


def _check_first_fits(
    version: DatasetVersion, base_model: BaseModel, settings: dict[str, Any], budget: int
) -> None:
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=settings)
    if estimate.time is None or estimate.time.seconds <= budget * 60:
        return
    minutes = estimate.time.seconds / 60
    raise ApplicationError(
        f"budget_minutes: the first trial alone is estimated at {minutes:.0f} minutes "
        f"({estimate.time.low_seconds / 60:.0f} to {estimate.time.high_seconds / 60:.0f}); "
        f"give the search at least {math.ceil(minutes)} minutes, or fewer epochs.",
        extra={"field": "budget_minutes"},
    )


def _trial_start(search: TrainingSearch, index: int) -> TrainingJob:
    shared = dict(search.hyperparameters)
    return training_job_create(
        project=search.project,
        dataset_version=search.dataset_version,
        base_model=search.base_model,
        user=search.created_by,
        hyperparameters=shared | search.trial_settings[index],
        model_name=search.model_name,
        search=search,
    )


def training_search_cancel(*, search: TrainingSearch) -> TrainingSearch:
    """Starts no more trials and cancels the one running; the best finished trial, if any,
    is still registered when that one has stopped."""
    with transaction.atomic():
        search = TrainingSearch.objects.select_for_update().get(pk=search.pk)
        if search.is_finished:
            raise ConflictError(f"{search} has already {search.status}.")
        search.cancel_requested = True
        search.save(update_fields=["cancel_requested"])
        running = [trial for trial in search.trials.all() if not trial.is_finished]
        for trial in running:
            training_job_cancel(job=trial)
    if not running:
        _advance_on_commit(search.pk)
    return search


def _advance_on_commit(search_id: int) -> None:
    # Deferred: training.tasks imports this module to do the work it queues.
    from .tasks import advance_training_search

    transaction.on_commit(lambda: advance_training_search.delay(search_id))


def training_search_advance(*, search_id: int) -> TrainingSearch:
    """After a trial ended: start the next one if it fits in the budget, else end the search
    and register its best trial. Idempotent: while a trial is queued or running, or once the
    search has ended, it changes nothing."""
    with transaction.atomic():
        # Locked so that two trials' ends (or a retried task) do not both start a trial.
        search = TrainingSearch.objects.select_for_update().get(pk=search_id)
        if search.is_finished:
            return search
        trials = list(search.trials.order_by("id"))
        if any(not trial.is_finished for trial in trials):
            return search
        next_index = len(trials)
        outcome = _why_no_next_trial(search, next_index)
        if not outcome:
            try:
                _trial_start(search, next_index)
                return search
            except ApplicationError as error:
                outcome = f"Trial {next_index + 1} could not start: {error.message}"
        _search_finish(search, trials, outcome)
    return search


def _why_no_next_trial(search: TrainingSearch, next_index: int) -> str:
    """Why the search starts no further trial, or "" when it starts trial ``next_index``."""
    if search.cancel_requested:
        return "Cancelled by request."
    if next_index >= len(search.trial_settings):
        return f"All {len(search.trial_settings)} trials ran."
    settings = job_hyperparameters(
        search.dataset_version,
        search.base_model,
        dict(search.hyperparameters) | search.trial_settings[next_index],
    )
    estimate = launch_estimate(
        version=search.dataset_version, base_model=search.base_model, hyperparameters=settings
    )
    needed = estimate.time.seconds if estimate.time is not None else 0.0
    left = (search.budget_minutes - search_spent_minutes(search)) * 60
    if needed > left:
        return (
            f"Stopped before trial {next_index + 1}: {max(left, 0) / 60:.1f} minutes of the "
            f"budget were left and it was estimated at {needed / 60:.1f}."
        )
    return ""


def _search_finish(search: TrainingSearch, trials: Sequence[TrainingJob], outcome: str) -> None:
    best = best_trial(trials)
    if search.cancel_requested:
        target = SearchStatus.CANCELLED
    else:
        target = SearchStatus.SUCCEEDED if best is not None else SearchStatus.FAILED
    if best is None:
        outcome += " No trial succeeded, so nothing was registered."
    state_change(
        search,
        kind="training search",
        target=target,
        allowed=SEARCH_TRANSITIONS,
        changes={
            "best_job": best.job if best is not None else None,
            "outcome": outcome.strip(),
            "finished_at": timezone.now(),
        },
    )
    if best is not None:
        job = best.job
        step = job.best_step if job.best_step is not None else job.step
        # In the same transaction: the search ends with its model version or not at all.
        model_version_keeper().job_succeeded(
            TrainedModel(
                job=job,
                checkpoint=job.checkpoints.filter(step=step).first(),
                adapter_dir=job.adapter_dir,
                train_loss=best.train_loss,
                val_loss=best.val_loss,
            )
        )
