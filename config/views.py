"""The site's pages that gather every app: a project's overview (its datasets, versions, jobs,
models and evaluations)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render

from datasets.models import DatasetVersion
from datasets.selectors import datasets_for_project, status_counts
from evaluation.models import EvalRun
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows
from registry.models import RegisteredModel
from training.models import TrainingJob


@login_required
def project_detail(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    datasets = [(d, status_counts(d)) for d in datasets_for_project(project)]
    context = {
        "project": project,
        "role": role,
        "datasets": datasets,
        "versions": DatasetVersion.objects.filter(dataset__project=project).select_related(
            "dataset"
        )[:10],
        "jobs": TrainingJob.objects.filter(project=project).select_related(
            "dataset_version__dataset", "base_model"
        )[:10],
        "models": RegisteredModel.objects.filter(project=project),
        "evals": EvalRun.objects.filter(project=project)[:10],
        "can": {action.value: role_allows(role, action) for action in Action},
    }
    return render(request, "ftportal/project_detail.html", context)
