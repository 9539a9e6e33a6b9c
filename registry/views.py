"""Pages of the model registry: the project's models with their versions, one version's
page, the promote (with its confirmation of the evidence) and rollback forms, and registering
one of a training job's checkpoints as a model version (a button on the job's page)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from training.selectors import checkpoints_of

from .gate import evaluation_reader
from .selectors import (
    alias_changes_of,
    alias_history,
    artifact_name,
    model_version_in_project,
    prefetched_production,
    prefetched_rollback_target,
    production_version,
    registered_model_in_project,
    registered_models_of,
    versions_losing_their_base,
)
from .services import (
    MAX_MARGIN_POINTS,
    model_version_promote,
    model_version_register_checkpoint,
    production_rollback,
    promotion_evidence,
)


@login_required
def model_list(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    # The API's query (a fixed few, whatever the number of models), and one read of scores.
    registered_models = list(registered_models_of(project))
    scores = evaluation_reader().latest_scores(
        [v for registered in registered_models for v in registered.versions.all()]
    )
    models = [
        {
            "model": registered,
            "production": prefetched_production(registered),
            "rollback_to": prefetched_rollback_target(registered),
            "versions": [
                {"version": v, "score": scores.get(v.pk), "artifact": artifact_name(v)}
                for v in registered.versions.all()
            ],
        }
        for registered in registered_models
    ]
    context = {
        "project": project,
        "role": role,
        "models": models,
        "history": alias_history(project)[:50],
        "endangered": versions_losing_their_base(project, today=timezone.localdate()),
        "can": role_flags(role),
    }
    return render(request, "registry/model_list.html", context)


@login_required
def model_version_detail(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    version = model_version_in_project(project, version_id)
    context = {
        "project": project,
        "role": role,
        "version": version,
        "artifact": artifact_name(version),
        "production": production_version(version.registered_model),
        "evaluations": evaluation_reader().evaluations_of(version),
        "history": alias_changes_of(version),
        "can": role_flags(role),
    }
    return render(request, "registry/version_detail.html", context)


def _margin_from(raw: str | None) -> float:
    try:
        return float(raw) if raw not in (None, "") else 0.0
    except ValueError:
        raise ApplicationError(
            f"The margin is a number of points between 0 and {MAX_MARGIN_POINTS}.",
            extra={"field": "margin"},
        ) from None


def _seen_version_from(raw: str | None, field: str) -> int | None:
    """A version number a page rendered into a hidden field; "none" when it showed no version."""
    if raw == "none":
        return None
    if raw is not None and raw.isdigit() and int(raw) >= 1:
        return int(raw)
    raise ApplicationError(
        "The form did not say which version the page showed; reload the page and try again.",
        extra={"field": field},
    )


@login_required
@require_http_methods(["GET", "POST"])
def version_promote(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """GET: the confirmation page with the gate's evidence; POST: promote with a reason."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
    version = model_version_in_project(project, version_id)
    data = request.POST if request.method == "POST" else request.GET
    margin = _margin_from(data.get("margin"))
    error, status = "", 200
    if request.method == "POST":
        try:
            model_version_promote(
                model_version=version,
                user=request.user,
                reason=data.get("reason", ""),
                expected_current_version=_seen_version_from(
                    data.get("expected_current_version"), "expected_current_version"
                ),
                margin_points=margin,
                override=data.get("override") == "on",
            )
        except ApplicationError as refused:
            error = refused.message
            status = refused.status_code
        else:
            messages.success(request, f"{version} is now production.")
            return redirect("model_list", project_id)
    context = {
        "project": project,
        "role": role,
        "version": version,
        "production": production_version(version.registered_model),
        "evidence": promotion_evidence(model_version=version, margin_points=margin),
        "margin": margin,
        "max_margin": MAX_MARGIN_POINTS,
        "reason": data.get("reason", ""),
        "error": error,
        "can": role_flags(role),
    }
    return render(request, "registry/promote_confirm.html", context, status=status)


@login_required
@require_POST
def model_rollback(request: AppRequest, project_id: int, model_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
    registered = registered_model_in_project(project, model_id)
    change = production_rollback(
        registered_model=registered,
        user=request.user,
        reason=request.POST.get("reason", ""),
        expected_current_version=_seen_version_from(
            request.POST.get("expected_current_version"), "expected_current_version"
        ),
        target_version=_seen_version_from(request.POST.get("target_version"), "target_version")
        or 0,
    )
    messages.success(request, f"Rolled production back to {change.to_version}.")
    return redirect("model_list", project_id)


@login_required
@require_POST
def checkpoint_register(
    request: AppRequest, project_id: int, job_id: int, checkpoint_id: int
) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
    checkpoint = get_object_or_404(checkpoints_of(project), pk=checkpoint_id, job_id=job_id)
    version = model_version_register_checkpoint(checkpoint=checkpoint)
    messages.success(request, f"Registered the checkpoint at step {checkpoint.step} as {version}.")
    return redirect("job_detail", project_id, job_id)
