"""The site's pages that gather every app: a project's overview (its datasets, versions, jobs
and evaluations, and a banner once the month has used most of its budget)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render

from costs.budgets import budget_status
from datasets.selectors import dataset_versions_of, datasets_of, status_counts
from evaluation.selectors import eval_runs_of
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from monitoring.alerts import unresolved_alert_count
from training.selectors import training_jobs_of


@login_required
def project_detail(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    datasets = [(d, status_counts(d)) for d in datasets_of(project)]
    can = role_flags(role)
    context = {
        "project": project,
        "role": role,
        "datasets": datasets,
        "versions": dataset_versions_of(project)[:10],
        "jobs": training_jobs_of(project)[:10],
        "evals": eval_runs_of(project)[:10],
        "can": can,
        # A banner from the first alert threshold on (costs.budgets), for those who read costs.
        "budget": budget_status(project) if can.read_costs else None,
        "open_alerts": unresolved_alert_count(project),
    }
    return render(request, "ftportal/project_detail.html", context)
