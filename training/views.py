"""Pages of training: the launch form with its live cost and time estimate, starting a job or
a search over training settings, a job's and a search's pages (polled while they run),
cancelling them, and the catalog of base models a project can train. Registering a checkpoint
as a model version is the registry's (registry.views)."""

from __future__ import annotations

import contextlib
import math
import uuid
from dataclasses import asdict
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from datasets.selectors import dataset_version_in_project
from datasets.test_sets import project_test_sets, training_refusal
from ftportal.errors import ApplicationError, ConflictError
from ftportal.http import AppRequest
from ftportal.idempotency import IDEMPOTENCY_FORM_FIELD, checked_key
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from providers.base import HostedTrainingConfig, TrainingConfig

from .estimates import END_OF_LIFE_WARNING_DAYS, end_of_life_problem, launch_estimate
from .hooks import model_version_keeper
from .hyperparameters import HOSTED_PROVIDERS, HYPERPARAMETER_LABELS, unset_text
from .recipes import job_hyperparameters, recipe_for
from .searches import (
    DEFAULT_TRIALS,
    MAX_TRIALS,
    MIN_TRIALS,
    TRIAL_PATIENCE,
    training_search_cancel,
    training_search_launch,
)
from .selectors import (
    checkpoint_rows,
    job_curves,
    job_overfitting,
    search_curves,
    search_spent_minutes,
    search_trial_rows,
    training_job_in_project,
    training_search_in_project,
)
from .services import training_job_cancel, training_job_launch

# Form fields per provider; the first ones show, the rest sit under "Advanced".
LOCAL_BASIC = ("epochs",)
LOCAL_ADVANCED = (
    "learning_rate",
    "batch_size",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "max_seq_len",
    "seed",
    "eval_every_steps",
    "checkpoint_every_steps",
    "early_stopping_patience",
    "validation_metric",
    "max_steps",
)
HOSTED_BASIC = ("epochs",)
HOSTED_ADVANCED = ("batch_size", "learning_rate_multiplier", "seed")


def _launchable_models() -> list[BaseModel]:
    """Enabled here and still taking fine-tuning jobs today."""
    today = timezone.localdate()
    models = [
        m
        # With its endpoint: the check reads the endpoint's end of fine-tuning.
        for m in BaseModel.objects.filter(is_active=True).select_related("endpoint")
        if not end_of_life_problem(m, today)
    ]
    if not models:
        raise ApplicationError("No base model is enabled for training.")
    return models


def _chosen_base_model(query: QueryDict, models: list[BaseModel]) -> BaseModel:
    wanted = query.get("base_model", "")
    return next((m for m in models if m.key == wanted), models[0])


def _raw_hyperparameters(query: QueryDict, base_model: BaseModel) -> dict[str, Any]:
    hosted = base_model.provider in HOSTED_PROVIDERS
    names = (HOSTED_BASIC + HOSTED_ADVANCED) if hosted else (LOCAL_BASIC + LOCAL_ADVANCED)
    return {name: query[name] for name in names if query.get(name, "").strip()}


FormField = tuple[str, str, str, str]  # name, label, value shown, placeholder


def _form_fields(
    version: DatasetVersion, base_model: BaseModel, query: QueryDict
) -> tuple[list[FormField], list[FormField]]:
    """Each field with what the user typed, else its default (the task's recipe's, then the
    provider's); an empty one's placeholder says what leaving it empty means, in the words the
    job page uses."""
    hosted = base_model.provider in HOSTED_PROVIDERS
    defaults: dict[str, Any] = asdict(HostedTrainingConfig() if hosted else TrainingConfig())
    defaults.update(recipe_for(version, base_model).defaults)
    if "target_modules" in defaults:
        defaults["target_modules"] = ", ".join(defaults["target_modules"])

    def field(name: str) -> FormField:
        default = defaults.get(name)
        shown = query.get(name) or ("" if default is None else str(default))
        placeholder = unset_text(name, hosted=hosted) if default is None else ""
        return name, HYPERPARAMETER_LABELS[name], shown, placeholder

    basic, advanced = (HOSTED_BASIC, HOSTED_ADVANCED) if hosted else (LOCAL_BASIC, LOCAL_ADVANCED)
    return [field(name) for name in basic], [field(name) for name in advanced]


def _estimate_context(
    version: DatasetVersion, query: QueryDict, models: list[BaseModel]
) -> dict[str, Any]:
    base_model = _chosen_base_model(query, models)
    chosen = {"base_model": base_model, "recipe": recipe_for(version, base_model)}
    try:
        stored = job_hyperparameters(version, base_model, _raw_hyperparameters(query, base_model))
    except ApplicationError as error:
        return chosen | {"estimate": None, "input_error": error.message}
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
    return chosen | {"estimate": estimate, "input_error": ""}


def _version_for(
    request: AppRequest, project_id: int, version_id: int
) -> tuple[Any, DatasetVersion]:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    return project, dataset_version_in_project(project, version_id)


def _offered(version: DatasetVersion) -> DatasetVersion:
    """The launch form is never offered for a held-out test set (its start would be refused
    by training_job_create, with the same words)."""
    refusal = training_refusal(version)
    if refusal:
        raise ApplicationError(refusal, extra={"field": "dataset_version"})
    return version


@login_required
def job_launch(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """The launch form with defaults, advanced fields and the estimate; htmx swaps it in."""
    project, version = _version_for(request, project_id, version_id)
    _offered(version)
    models = _launchable_models()
    context = _estimate_context(version, request.GET, models)
    basic, advanced = _form_fields(version, context["base_model"], request.GET)
    context.update(
        {
            "project": project,
            "version": version,
            "base_models": models,
            "basic_fields": basic,
            "advanced_fields": advanced,
            "model_name": request.GET.get("model_name") or f"{version.dataset.name}-ft",
            "search": {
                "trials": DEFAULT_TRIALS,
                "min_trials": MIN_TRIALS,
                "max_trials": MAX_TRIALS,
                "patience": TRIAL_PATIENCE,
                "budget_minutes": _suggested_budget(context.get("estimate"), DEFAULT_TRIALS),
            },
            # A fresh key each time the form is drawn: posting this form twice (a double click,
            # a resubmit) queues one job.
            "idempotency_key": uuid.uuid4(),
        }
    )
    template = "training/launch.html#launch-form" if request.htmx else "training/launch.html"
    return render(request, template, context)


def _suggested_budget(estimate: Any, trials: int) -> int:
    """Room for ``trials`` trials as long as the estimate's high end, in whole minutes."""
    time = getattr(estimate, "time", None)
    if time is None:
        return 60
    return max(1, math.ceil(time.high_seconds * trials / 60))


def _whole_number(value: str, *, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApplicationError(
            f"{field}: expected a whole number of {field.split('_')[-1]}, got {value!r}.",
            extra={"field": field},
        ) from None


@login_required
@require_POST
def search_create(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """The launch form's second button: the same settings, tried in a few variations."""
    project, version = _version_for(request, project_id, version_id)
    base_model = get_object_or_404(BaseModel, key=request.POST.get("base_model", ""))
    launch = training_search_launch(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=request.user,
        idempotency_key=checked_key(
            request.POST.get(IDEMPOTENCY_FORM_FIELD, ""), field=IDEMPOTENCY_FORM_FIELD
        ),
        budget_minutes=_whole_number(
            request.POST.get("budget_minutes", ""), field="budget_minutes"
        ),
        trial_count=_whole_number(request.POST.get("trial_count", ""), field="trial_count"),
        hyperparameters=_raw_hyperparameters(request.POST, base_model),
        model_name=request.POST.get("model_name", ""),
    )
    return redirect("search_detail", project_id, launch.obj.pk)


@login_required
def search_detail(request: AppRequest, project_id: int, search_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    search = training_search_in_project(project, search_id)
    best = search.best_job
    context = {
        "project": project,
        "search": search,
        "trials": search_trial_rows(search),
        "chart": search_curves(search),
        "spent_minutes": search_spent_minutes(search),
        "best_versions": list(best.model_versions.all()) if best is not None else [],
        "can": role_flags(role),
    }
    template = (
        "training/search_detail.html#search-status"
        if request.htmx
        else "training/search_detail.html"
    )
    return render(request, template, context)


@login_required
@require_POST
def search_cancel(request: AppRequest, project_id: int, search_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    search = training_search_in_project(project, search_id)
    # A search that ended in the meantime cannot be cancelled; the page shows how it ended.
    with contextlib.suppress(ConflictError):
        training_search_cancel(search=search)
    return redirect("search_detail", project_id, search.pk)


@login_required
def job_estimate(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    _, version = _version_for(request, project_id, version_id)
    _offered(version)
    return render(
        request,
        "training/launch.html#launch-estimate",
        _estimate_context(version, request.GET, _launchable_models()),
    )


@login_required
@require_POST
def job_create(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, version = _version_for(request, project_id, version_id)
    base_model = get_object_or_404(BaseModel, key=request.POST.get("base_model", ""))
    launch = training_job_launch(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=request.user,
        idempotency_key=checked_key(
            request.POST.get(IDEMPOTENCY_FORM_FIELD, ""), field=IDEMPOTENCY_FORM_FIELD
        ),
        hyperparameters=_raw_hyperparameters(request.POST, base_model),
        model_name=request.POST.get("model_name", ""),
    )
    return redirect("job_detail", project_id, launch.obj.pk)


@login_required
def job_detail(request: AppRequest, project_id: int, job_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    job = training_job_in_project(project, job_id)
    model_versions = list(job.model_versions.select_related("registered_model"))
    context = {
        "project": project,
        "role": role,
        "job": job,
        "curves": job_curves(job),
        "overfitting": job_overfitting(job),
        "checkpoints": checkpoint_rows(job),
        "latest_sweep": job.eval_runs.order_by("-created_at", "-pk").first(),
        "events": list(job.events.order_by("-id")[:100]),
        "model_versions": model_versions,
        # The evaluate shortcut offers the project's held-out test sets, the newest first.
        "test_sets": list(project_test_sets(project.pk)) if model_versions else [],
        "can": role_flags(role),
    }
    template = "training/job_detail.html#job-status" if request.htmx else "training/job_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def job_cancel(request: AppRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    job = training_job_in_project(project, job_id)
    # A job that finished in the meantime cannot be cancelled; the page shows its final state.
    with contextlib.suppress(ConflictError):
        training_job_cancel(job=job)
    return redirect("job_detail", project_id, job.pk)


@login_required
def base_model_catalog(request: AppRequest, project_id: int) -> HttpResponse:
    """The catalog with prices and end-of-life dates, and this project's model versions whose
    base model is going away."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    today = timezone.localdate()
    context = {
        "project": project,
        "role": role,
        "base_models": [
            (m, end_of_life_problem(m, today)) for m in BaseModel.objects.select_related("endpoint")
        ],
        # Versions are the registry's, a layer above; it answers through training's hook.
        "endangered": model_version_keeper().versions_losing_their_base(project, today=today),
        "horizon_days": END_OF_LIFE_WARNING_DAYS,
        "is_admin": request.user.is_staff,
    }
    return render(request, "training/catalog.html", context)
