"""The budget page of a project, /projects/<id>/budget/: the month's spend against the budget,
its alerts; ML leads and admins set or remove the budget and acknowledge alerts, managers and
leads read it (``Action.READ_COSTS``)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags

from .budget_alerts import budget_alert_acknowledge, budget_alert_in_project, budget_alerts_of
from .budgets import ALERT_THRESHOLDS, budget_remove, budget_set, budget_status, dollars

# The alerts the page lists; older ones stay in the API's pages.
PAGE_ALERTS = 50


def _budget_page(
    request: AppRequest, *, project: Project, role: str, error: str = "", status: int = 200
) -> HttpResponse:
    budget = budget_status(project)
    context = {
        "project": project,
        "can": role_flags(role),
        "status": budget,
        "spent": dollars(budget.spent_usd),
        "monthly": dollars(budget.budget.monthly_usd) if budget.budget else "",
        "alerts": budget_alerts_of(project)[:PAGE_ALERTS],
        "thresholds": ALERT_THRESHOLDS,
        "error": error,
        # What the form shows again after a refusal: what was sent, not what is stored.
        "form_monthly": request.POST.get("monthly_usd", "") if error else "",
    }
    return render(request, "costs/budget.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def budget_page(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: the month against the budget, and the alerts. POST (leads, admins): set the
    budget or change it."""
    if request.method == "GET":
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.READ_COSTS
        )
        return _budget_page(request, project=project, role=role)
    project, role = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
    try:
        budget = budget_set(
            project=project,
            monthly_usd=request.POST.get("monthly_usd", ""),
            hard_cap=request.POST.get("hard_cap") == "on",
            user=request.user,
        )
    except ApplicationError as refused:
        return _budget_page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    cap = " with a hard cap" if budget.hard_cap else ""
    messages.success(request, f"The monthly budget is {dollars(budget.monthly_usd)}{cap}.")
    return redirect("project_budget", project_id)


@login_required
@require_POST
def budget_page_remove(request: AppRequest, project_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
    budget_remove(project=project, user=request.user)
    messages.success(request, "The project has no budget now: no alerts, no cap.")
    return redirect("project_budget", project_id)


@login_required
@require_POST
def budget_alert_page_acknowledge(
    request: AppRequest, project_id: int, alert_id: int
) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
    alert = budget_alert_acknowledge(
        alert=budget_alert_in_project(project, alert_id), user=request.user
    )
    messages.success(request, f"Acknowledged the {alert.threshold_percent} % alert.")
    return redirect("project_budget", project_id)
