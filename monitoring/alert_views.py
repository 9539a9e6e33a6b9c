"""The project's alert pages: the alert list and each alert (every member reads them,
``Action.READ_MONITORING``; leads acknowledge and resolve, ``Action.MANAGE_MONITORING``), the
alert rules (leads add, change, disable or remove them) and the monitoring settings (where
alerts are sent, the drift window, when new examples make a retrain worth proposing)."""

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
from registry.models import Alias

from .alerts import (
    STATE_FILTERS,
    alert_acknowledge,
    alert_in_project,
    alert_resolve,
    alerts_in_state,
)
from .models import AlertRule, Comparison, Figure
from .selectors import monitoring_settings_of
from .services import (
    monitoring_settings_set,
    rule_create,
    rule_delete,
    rule_in_project,
    rule_update,
    rules_of,
    webhook_destinations,
)

PAGE_ALERTS = 100


def _state_filter(request: AppRequest) -> str:
    wanted = request.GET.get("state", "unresolved").strip() or "unresolved"
    if wanted not in STATE_FILTERS:
        raise ApplicationError(
            f"state: expected one of {', '.join(STATE_FILTERS)}, not {wanted[:40]!r}.",
            extra={"field": "state"},
        )
    return wanted


@login_required
def alert_list(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    wanted = _state_filter(request)
    alerts = alerts_in_state(project, wanted)
    context = {
        "project": project,
        "can": role_flags(role),
        "alerts": alerts[:PAGE_ALERTS],
        "state": wanted,
        "states": STATE_FILTERS,
    }
    return render(request, "monitoring/alerts.html", context)


@login_required
def alert_detail(request: AppRequest, project_id: int, alert_id: int) -> HttpResponse:
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    alert = alert_in_project(project, alert_id)
    context = {"project": project, "can": role_flags(role), "alert": alert}
    return render(request, "monitoring/alert_detail.html", context)


@login_required
@require_POST
def alert_page_acknowledge(request: AppRequest, project_id: int, alert_id: int) -> HttpResponse:
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    alert = alert_acknowledge(alert=alert_in_project(project, alert_id), user=request.user)
    messages.success(request, f"Acknowledged: {alert.title}")
    return redirect("monitoring_alert", project_id, alert.pk)


@login_required
@require_POST
def alert_page_resolve(request: AppRequest, project_id: int, alert_id: int) -> HttpResponse:
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    alert = alert_resolve(
        alert=alert_in_project(project, alert_id),
        user=request.user,
        note=request.POST.get("note", ""),
    )
    messages.success(request, f"Resolved: {alert.title}")
    return redirect("monitoring_alert", project_id, alert.pk)


# --- rules ----------------------------------------------------------------------------------------


def _rule_form_context(project: Project) -> dict[str, object]:
    return {
        "aliases": Alias.objects.filter(registered_model__project=project)
        .select_related("registered_model")
        .order_by("registered_model__name", "name"),
        "figures": Figure.choices,
        "comparisons": Comparison.choices,
    }


def _rules_page(
    request: AppRequest, *, project: Project, role: str, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "project": project,
        "can": role_flags(role),
        "rules": rules_of(project.pk),
        "error": error,
        "sent": request.POST if error else {},
        **_rule_form_context(project),
    }
    return render(request, "monitoring/rules.html", context, status=status)


def _rule_data(request: AppRequest) -> dict[str, object]:
    """The form's fields; the model and alias come as one "<model id>:<alias>" choice."""
    data: dict[str, object] = {key: request.POST.get(key, "") for key in request.POST}
    model_id, _, alias = str(data.pop("target", "")).partition(":")
    data["registered_model"] = model_id
    data["alias"] = alias
    return data


@login_required
@require_http_methods(["GET", "POST"])
def rule_list(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: the project's rules. POST (leads): add a rule."""
    if request.method == "GET":
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return _rules_page(request, project=project, role=role)
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    try:
        rule = rule_create(project=project, user=request.user, data=_rule_data(request))
    except ApplicationError as refused:
        return _rules_page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    messages.success(request, f"Rule added: {rule}.")
    return redirect("monitoring_rules", project_id)


def _rule_page(
    request: AppRequest, *, project: Project, rule: AlertRule, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "project": project,
        "rule": rule,
        "error": error,
        "sent": request.POST if error else {},
        **_rule_form_context(project),
    }
    return render(request, "monitoring/rule_edit.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: AppRequest, project_id: int, rule_id: int) -> HttpResponse:
    """Leads only, both to see the form and to save it."""
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    rule = rule_in_project(project, rule_id)
    if request.method == "GET":
        return _rule_page(request, project=project, rule=rule)
    try:
        rule = rule_update(rule=rule, data=_rule_data(request))
    except ApplicationError as refused:
        return _rule_page(
            request, project=project, rule=rule, error=refused.message, status=refused.status_code
        )
    messages.success(request, f"Rule saved: {rule}.")
    return redirect("monitoring_rules", project_id)


@login_required
@require_POST
def rule_page_delete(request: AppRequest, project_id: int, rule_id: int) -> HttpResponse:
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    rule = rule_in_project(project, rule_id)
    rule_delete(rule=rule)
    if rule.is_default:
        messages.success(request, f"Default rule disabled: {rule}.")
    else:
        messages.success(request, f"Rule removed: {rule}.")
    return redirect("monitoring_rules", project_id)


# --- settings -------------------------------------------------------------------------------------


def _settings_page(
    request: AppRequest, *, project: Project, role: str, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "project": project,
        "can": role_flags(role),
        "settings": monitoring_settings_of(project.pk),
        "webhooks": webhook_destinations(),
        "error": error,
    }
    return render(request, "monitoring/settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def monitoring_settings_page(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: every member reads where alerts go. POST (leads): change it."""
    if request.method == "GET":
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return _settings_page(request, project=project, role=role)
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
    )
    try:
        monitoring_settings_set(project=project, user=request.user, data=request.POST)
    except ApplicationError as refused:
        return _settings_page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    messages.success(request, "Monitoring settings saved.")
    return redirect("monitoring_settings", project_id)
