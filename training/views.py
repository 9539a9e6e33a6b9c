from __future__ import annotations

import contextlib

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from datasets.models import DatasetVersion
from ftportal.errors import ConflictError
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows

from .models import BaseModel, TrainingJob
from .selectors import CHART_HEIGHT, CHART_WIDTH, loss_chart
from .services import HYPERPARAMETER_BOUNDS, training_job_cancel, training_job_create

FORM_HYPERPARAMETERS = ("epochs", "learning_rate", "batch_size", "lora_r", "max_steps", "seed")


@login_required
@require_POST
def job_create(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    version = get_object_or_404(DatasetVersion, pk=version_id, dataset__project=project)
    base_model = get_object_or_404(BaseModel, key=request.POST.get("base_model", ""))
    hyperparameters = {
        name: request.POST[name]
        for name in FORM_HYPERPARAMETERS
        if name in HYPERPARAMETER_BOUNDS and request.POST.get(name, "").strip()
    }
    job = training_job_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=request.user,
        hyperparameters=hyperparameters,
        model_name=request.POST.get("model_name", ""),
    )
    return redirect("job_detail", project_id, job.pk)


@login_required
def job_detail(request: AppRequest, project_id: int, job_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    job = get_object_or_404(
        TrainingJob.objects.select_related("dataset_version__dataset", "base_model", "created_by"),
        pk=job_id,
        project=project,
    )
    context = {
        "project": project,
        "role": role,
        "job": job,
        "chart": loss_chart(job),
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "model_version": getattr(job, "model_version", None),
        "can_train": role_allows(role, Action.TRAIN),
        "can_evaluate": role_allows(role, Action.EVALUATE),
    }
    template = "training/job_detail.html#job-status" if request.htmx else "training/job_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def job_cancel(request: AppRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    job = get_object_or_404(TrainingJob, pk=job_id, project=project)
    # A job that finished in the meantime cannot be cancelled; the page shows its final state.
    with contextlib.suppress(ConflictError):
        training_job_cancel(job=job)
    return redirect("job_detail", project_id, job.pk)
