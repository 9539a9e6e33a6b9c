from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows

from .models import ModelVersion, RegisteredModel
from .selectors import (
    alias_history,
    production_version,
    versions_losing_their_base,
    versions_with_lineage,
)
from .services import model_version_promote, production_rollback, rollback_target


@login_required
def model_list(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    models = [
        {
            "model": registered,
            "production": production_version(registered),
            "rollback_to": rollback_target(registered),
            "versions": versions_with_lineage(registered),
        }
        for registered in RegisteredModel.objects.filter(project=project)
    ]
    context = {
        "project": project,
        "role": role,
        "models": models,
        "history": alias_history(project)[:50],
        "endangered": versions_losing_their_base(project, today=timezone.localdate()),
        "can_promote": role_allows(role, Action.PROMOTE),
        "can_evaluate": role_allows(role, Action.EVALUATE),
    }
    return render(request, "registry/model_list.html", context)


@login_required
@require_POST
def version_promote(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
    version = get_object_or_404(ModelVersion, pk=version_id, registered_model__project=project)
    model_version_promote(
        model_version=version,
        user=request.user,
        reason=request.POST.get("reason", ""),
    )
    messages.success(request, f"{version} is now production.")
    return redirect("model_list", project_id)


@login_required
@require_POST
def model_rollback(request: AppRequest, project_id: int, model_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
    registered = get_object_or_404(RegisteredModel, pk=model_id, project=project)
    change = production_rollback(
        registered_model=registered,
        user=request.user,
        reason=request.POST.get("reason", ""),
    )
    messages.success(request, f"Rolled production back to {change.to_version}.")
    return redirect("model_list", project_id)
