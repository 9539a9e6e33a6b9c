"""What a retraining proposal proposes (``monitoring.retraining``): the dataset version, the base
model and the hyperparameters of the training job it would launch, and the evaluation that
gates the version it trains. Reads only; the proposal's services store what these answer.

- Dataset version: the dataset's latest frozen version when it holds every approved example,
  else None (the approved examples are frozen into a new version when the proposal is
  accepted).
- Base model: the served version's base while it takes new jobs and nothing ends for it within
  ``RETIRING_HORIZON_DAYS``; else a local base model the local LoRA trainer takes (the one the
  project last trained successfully, else the catalog's smallest).
- Hyperparameters: the served version's, only the keys the chosen provider's launcher takes.
- Evaluation plan: the new version against the served one on the new dataset version's
  validation split, with the metric, settings and margin of the evaluation that promoted the
  served version (the evaluation defaults when none is recorded)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, fields
from typing import Any

from catalog.lifecycle import LifecycleEvent, base_model_lifecycle_events
from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion
from evaluation.models import EvalRun, EvalSplit
from evaluation.scoring import METRICS
from ftportal.errors import ApplicationError
from providers.base import HostedTrainingConfig, TrainingConfig
from registry.models import AliasChange, AliasChangeKind, ModelVersion
from training.estimates import end_of_life_problem
from training.hyperparameters import HOSTED_PROVIDERS, config_for
from training.models import JobStatus, TrainingJob

from .lifecycle_alerts import lifecycle_events_of
from .retrain_selectors import examples_not_in, latest_dataset_version

logger = logging.getLogger(__name__)

# A base model that shuts down, stops serving its fine-tuned models or stops taking new jobs
# within this many days is a reason to retrain elsewhere.
RETIRING_HORIZON_DAYS = 90
DEFAULT_METRIC = "exact_match"
DEFAULT_MAX_NEW_TOKENS = 64


# --- a base model's end --------------------------------------------------------------------------


def event_key(event: LifecycleEvent) -> str:
    """What ends and when: the same end keeps its key from day to day."""
    return f"{event.kind}:{event.date.isoformat()}"


def event_words(event: LifecycleEvent) -> str:
    left = event.days_left
    when = f"in {left} days" if left > 0 else "today" if left == 0 else f"{-left} days ago"
    return f"{event.words} ({when})"


def within_horizon(events: list[LifecycleEvent]) -> list[LifecycleEvent]:
    """The events within RETIRING_HORIZON_DAYS (passed ones included)."""
    return [event for event in events if event.days_left <= RETIRING_HORIZON_DAYS]


def served_base_endings(served: ModelVersion, today: dt.date) -> list[LifecycleEvent]:
    """The ends of the served version's base model (and its endpoint) within the horizon."""
    return within_horizon(lifecycle_events_of(served, today))


def _base_endings(base: BaseModel, today: dt.date) -> list[LifecycleEvent]:
    return within_horizon(base_model_lifecycle_events(base, today=today))


def takes_new_jobs(base: BaseModel, today: dt.date) -> bool:
    """Whether a job may start on ``base`` today: enabled here, at no end of its life
    (training's own check, its endpoint's end of fine-tuning included), and its endpoint (a
    hosted model's) enabled."""
    if not base.is_active or end_of_life_problem(base, today):
        return False
    return base.endpoint is None or base.endpoint.enabled


# --- the proposed job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposedBase:
    base_model: BaseModel
    # Why it is not the served version's base, in words ("" when it is).
    note: str = ""


def proposed_base(served: ModelVersion, today: dt.date) -> ProposedBase | None:
    """The base model the proposed job trains; None when no base model takes a job."""
    base = served.base_model
    leaving = bool(served_base_endings(served, today))
    if not leaving and takes_new_jobs(base, today):
        return ProposedBase(base)
    why = "is going away" if leaving else "takes no new fine-tuning jobs here"
    local = _local_base(served, today)
    if local is not None:
        return ProposedBase(
            local,
            f"{base.display_name} {why}: the job is proposed on {local.display_name} with the "
            "local LoRA trainer.",
        )
    if takes_new_jobs(base, today):
        return ProposedBase(
            base,
            f"{base.display_name} {why}, and no local base model is enabled to move to: the "
            f"job is proposed on {base.display_name} again.",
        )
    return None


def _local_base(served: ModelVersion, today: dt.date) -> BaseModel | None:
    """A local base model that takes jobs and is not going away, other than the served one's:
    the one the project's latest succeeded job trained (it learnt the task on this hardware),
    else the catalog's smallest (the guide: the smallest model that can learn the task)."""
    usable = [
        base
        for base in BaseModel.objects.filter(provider=Provider.LOCAL, is_active=True)
        .exclude(pk=served.base_model_id)
        .select_related("endpoint")
        if takes_new_jobs(base, today) and not _base_endings(base, today)
    ]
    if not usable:
        return None
    trained = (
        TrainingJob.objects.filter(
            project_id=served.registered_model.project_id,
            status=JobStatus.SUCCEEDED,
            base_model__in=usable,
        )
        .order_by("-finished_at", "-pk")
        .values_list("base_model_id", flat=True)
        .first()
    )
    return next((base for base in usable if base.pk == trained), usable[0])


def launcher_hyperparameters(served: dict[str, Any], provider: str) -> dict[str, Any]:
    """The served version's hyperparameters that ``provider``'s launcher takes (unset ones
    left out, so they take the launcher's defaults); {} when those are refused."""
    if provider in HOSTED_PROVIDERS:
        accepted = {field.name for field in fields(HostedTrainingConfig)} - {"suffix"}
    else:
        accepted = {field.name for field in fields(TrainingConfig)}
    kept = {name: value for name, value in served.items() if name in accepted and value is not None}
    try:
        config_for(provider, kept)
    except ApplicationError as refused:
        logger.warning("served hyperparameters refused (%s); proposing defaults", refused.message)
        return {}
    return kept


def proposed_dataset_version(served: ModelVersion) -> DatasetVersion | None:
    """The dataset's latest frozen version when it holds every approved example (the served
    version's own when nothing was approved since); None when the approved examples are to be
    frozen into a new version on accept."""
    latest = latest_dataset_version(served.dataset_version)
    return None if examples_not_in(latest).exists() else latest


# --- the evaluation that gates it ----------------------------------------------------------------


def evaluation_plan(
    served: ModelVersion, alias: str, dataset_version: DatasetVersion | None
) -> dict[str, Any]:
    """What evaluation will gate the new version, as ``evaluation.services.eval_run_create``
    will be asked for it once the job's version is registered."""
    promotion = (
        AliasChange.objects.filter(
            registered_model_id=served.registered_model_id,
            alias=alias,
            kind=AliasChangeKind.PROMOTE,
            to_version=served,
        )
        .order_by("-id")
        .first()
    )
    evidence: dict[str, Any] = promotion.evidence if promotion else {}
    metric = evidence.get("metric") or DEFAULT_METRIC
    metric = metric if metric in METRICS else DEFAULT_METRIC
    margin = float(evidence.get("margin_points") or 0.0)
    run_id = evidence.get("eval_run_id")
    run = EvalRun.objects.filter(pk=run_id).first() if isinstance(run_id, int) else None
    label = METRICS[metric].label
    return {
        "dataset_version_id": dataset_version.pk if dataset_version else None,
        "dataset_version": str(dataset_version) if dataset_version else "frozen on accept",
        "split": EvalSplit.VALIDATION.value,
        "candidate": "the new version",
        "baseline_version_id": served.pk,
        "baseline": f"{served} ({alias})",
        "primary_metric": metric,
        "metric_label": label,
        "max_new_tokens": run.max_new_tokens if run else DEFAULT_MAX_NEW_TOKENS,
        "regex_check": run.regex_check if run else "",
        "contains_check": run.contains_check if run else "",
        "margin_points": margin,
        "settings_from": (
            f"evaluation {run.pk}, which promoted {served}"
            if run
            else "the evaluation defaults (no promotion evidence recorded)"
        ),
        "gate": (
            f"The new version replaces {served} only when it is better on {label}, or no "
            f"worse than {margin:g} points below it, on the same validation items."
        ),
    }


@dataclass(frozen=True)
class Prefill:
    """The job a proposal would launch and the evaluation that gates it."""

    dataset_version: DatasetVersion | None
    base_model: BaseModel
    base_note: str
    hyperparameters: dict[str, Any]
    evaluation_plan: dict[str, Any]


def prefill_for(served: ModelVersion, alias: str, today: dt.date) -> Prefill | None:
    """The whole prefill for a retrain of ``served``; None when no base model takes a job."""
    base = proposed_base(served, today)
    if base is None:
        return None
    version = proposed_dataset_version(served)
    return Prefill(
        dataset_version=version,
        base_model=base.base_model,
        base_note=base.note,
        hyperparameters=launcher_hyperparameters(served.hyperparameters, base.base_model.provider),
        evaluation_plan=evaluation_plan(served, alias, version),
    )
