from __future__ import annotations

from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control

from datasets.models import DatasetVersion
from datasets.selectors import datasets_for_project, status_counts
from evaluation.models import EvalRun
from registry.models import RegisteredModel
from training.models import TrainingJob

from .http import AppRequest
from .models import Membership
from .permissions import project_for
from .roles import Action, role_allows


@login_required
def project_list(request: AppRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user_id=request.user.pk).select_related("project")
    return render(request, "ftportal/project_list.html", {"memberships": memberships})


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


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for the container health check: the process serves and the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")


FAVICON_MAX_AGE_S = 7 * 24 * 3600


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on every page whatever the page links: the same
    static file the pages link, served by the app so that it never depends on how (or
    whether) the static files are served."""
    path = finders.find("favicon.ico")
    if not isinstance(path, str):
        raise Http404("favicon.ico is missing from the static files")
    response = HttpResponse(Path(path).read_bytes(), content_type="image/vnd.microsoft.icon")
    patch_cache_control(response, public=True, max_age=FAVICON_MAX_AGE_S)
    return response
