from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action
from registry.models import ModelVersion

from .models import EvalRun, EvalStatus
from .selectors import side_by_side
from .services import eval_run_create


@login_required
@require_POST
def eval_create(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    version = get_object_or_404(ModelVersion, pk=version_id, registered_model__project=project)
    run = eval_run_create(project=project, model_version=version, user=request.user)
    return redirect("eval_detail", project_id, run.pk)


@login_required
def eval_detail(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    run = get_object_or_404(
        EvalRun.objects.select_related("dataset_version__dataset"), pk=run_id, project=project
    )
    candidates, rows = side_by_side(run)
    context = {
        "project": project,
        "role": role,
        "run": run,
        "candidates": candidates,
        "rows": rows,
        "in_progress": run.status in (EvalStatus.QUEUED, EvalStatus.RUNNING),
    }
    template = (
        "evaluation/eval_detail.html#eval-body" if request.htmx else "evaluation/eval_detail.html"
    )
    return render(request, template, context)
