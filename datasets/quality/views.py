"""Pages for quality analysis: the dataset quality page, its polled status, the duplicate
bulk fix, and the readiness section of a dataset version."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from catalog.selectors import base_model_by_key
from datasets.selectors import (
    analysis_run_in_project,
    dataset_in_project,
    dataset_version_in_project,
)
from ftportal.errors import ApplicationError, ConflictError
from ftportal.http import AppRequest, parse_id
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags

from ..contracts import describe_contract
from ..models import AnalysisRun, Dataset, ExampleStatus
from .selectors import (
    RUNNING_STATUSES,
    analysis_catalog,
    analysis_runs_for,
    duplicate_fix_count,
    kind_rows,
    latest_analysis_run,
)
from .services import (
    analysis_run_create,
    dataset_version_readiness,
    exact_duplicates_reject,
)

QUALITY_TEMPLATE = "datasets/quality.html"


def _analysis_context(
    *, project_id: int, role: str, dataset: Dataset, run: AnalysisRun | None
) -> dict[str, object]:
    stats = run.stats if run else {}
    return {
        "dataset": dataset,
        "run": run,
        "running": bool(run and run.status in RUNNING_STATUSES),
        "stats": stats,
        "kind_rows": kind_rows(
            stats.get("findings", {}),
            project_id=project_id,
            dataset_id=dataset.pk,
            status=ExampleStatus.PENDING,
        ),
        "fix_count": duplicate_fix_count(run) if run else 0,
        "can": role_flags(role),
    }


@login_required
def dataset_quality(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    dataset = dataset_in_project(project, dataset_id)
    requested = request.GET.get("run", "")
    run = (
        get_object_or_404(AnalysisRun, pk=requested, dataset=dataset)
        if parse_id(requested) is not None
        else latest_analysis_run(dataset)
    )
    context = {
        "project": project,
        "role": role,
        "base_models": analysis_catalog(),
        "selected_model": run.base_model_key if run else "",
        "runs": analysis_runs_for(dataset)[:10],
        "confirm_fix": request.GET.get("confirm") == "fix",
        "contract_description": describe_contract(dataset.answer_contract),
        **_analysis_context(project_id=project.pk, role=role, dataset=dataset, run=run),
    }
    template = f"{QUALITY_TEMPLATE}#analysis" if request.htmx else QUALITY_TEMPLATE
    return render(request, template, context)


@login_required
@require_POST
def analysis_start(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.ANALYZE)
    dataset = dataset_in_project(project, dataset_id)
    key = request.POST.get("base_model", "")
    base_model = base_model_by_key(key)
    if base_model is None:
        raise ApplicationError(
            f"base_model: '{key}' is not in the catalog; pick a base model from the list.",
            extra={"field": "base_model"},
        )
    run = analysis_run_create(dataset=dataset, base_model=base_model, user=request.user)
    if request.htmx:
        context = {
            "project": project,
            "role": role,
            **_analysis_context(project_id=project.pk, role=role, dataset=dataset, run=run),
        }
        return render(request, f"{QUALITY_TEMPLATE}#analysis", context, status=201)
    return redirect(reverse("dataset_quality", args=[project.pk, dataset.pk]) + f"?run={run.pk}")


@login_required
def analysis_status(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    """Polled by htmx while a run is queued or running; the finished run stops the polling."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    run = analysis_run_in_project(project, run_id)
    if not request.htmx:
        return redirect(
            reverse("dataset_quality", args=[project.pk, run.dataset_id]) + f"?run={run.pk}"
        )
    context = {
        "project": project,
        "role": role,
        **_analysis_context(project_id=project.pk, role=role, dataset=run.dataset, run=run),
    }
    return render(request, f"{QUALITY_TEMPLATE}#analysis", context)


@login_required
@require_POST
def analysis_fix_duplicates(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    run = analysis_run_in_project(project, run_id)
    page = reverse("dataset_quality", args=[project.pk, run.dataset_id]) + f"?run={run.pk}"
    try:
        rejected = exact_duplicates_reject(run=run, user=request.user)
    except ConflictError as error:
        messages.error(request, error.message)
        return redirect(page)
    messages.success(
        request, f"Rejected {rejected} exact duplicate(s); one example of each group was kept."
    )
    return redirect(page)


@login_required
def version_readiness(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """The readiness section of a version page (loaded by htmx, or on its own)."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    version = dataset_version_in_project(project, version_id)
    report = dataset_version_readiness(version=version)
    context = {
        "project": project,
        "role": role,
        "version": version,
        "dataset": version.dataset,
        "report": report,
        "kind_rows": kind_rows(
            report.get("findings", {}),
            project_id=project.pk,
            dataset_id=version.dataset_id,
            status=ExampleStatus.APPROVED,
        ),
        "can": role_flags(role),
    }
    # Loaded into the version page by htmx; opened directly, it gets the site's layout.
    template = (
        "datasets/quality_readiness.html"
        if request.htmx
        else "datasets/quality_readiness_page.html"
    )
    return render(request, template, context)
