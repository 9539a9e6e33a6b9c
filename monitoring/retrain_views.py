"""The project's retraining proposals: the list at /projects/<id>/retraining/ (waiting ones
first) and each proposal's page, with its reasons, the prefilled training job, the evaluation
that will gate it and the job's estimate (every member reads them, ``Action.READ_MONITORING``;
the estimate's cost only where the role reads costs); ML leads and admins accept (which launches
the job) or dismiss one (``Action.MANAGE_MONITORING`` and ``Action.TRAIN``)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows, role_flags
from training.hyperparameters import HOSTED_PROVIDERS, hyperparameter_rows

from .models import RetrainProposal
from .retrain_selectors import (
    project_for_retrain_decision,
    proposal_estimate,
    retrain_proposal_in_project,
    retrain_proposals_of,
)
from .retraining import MAX_NOTE_CHARS, retrain_accept, retrain_dismiss

# The proposals the list shows; older ones stay in the API's pages.
PAGE_PROPOSALS = 100


def _decides(role: str) -> bool:
    return role_allows(role, Action.MANAGE_MONITORING) and role_allows(role, Action.TRAIN)


@login_required
def retrain_list(request: AppRequest, project_id: int) -> HttpResponse:
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    context = {
        "project": project,
        "can": role_flags(role),
        "proposals": retrain_proposals_of(project)[:PAGE_PROPOSALS],
    }
    return render(request, "monitoring/retrain_list.html", context)


def _detail_page(
    request: AppRequest,
    *,
    project: Project,
    role: str,
    proposal: RetrainProposal,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    hosted = proposal.base_model.provider in HOSTED_PROVIDERS
    context: dict[str, Any] = {
        "project": project,
        "can": role_flags(role),
        "decides": _decides(role),
        "proposal": proposal,
        "hyperparameters": hyperparameter_rows(proposal.hyperparameters, hosted=hosted),
        "plan": proposal.evaluation_plan,
        "estimate": proposal_estimate(proposal),
        "max_note": MAX_NOTE_CHARS,
        "error": error,
    }
    return render(request, "monitoring/retrain_detail.html", context, status=status)


@login_required
def retrain_detail(request: AppRequest, project_id: int, proposal_id: int) -> HttpResponse:
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    proposal = retrain_proposal_in_project(project, proposal_id)
    return _detail_page(request, project=project, role=role, proposal=proposal)


@login_required
@require_POST
def retrain_page_accept(request: AppRequest, project_id: int, proposal_id: int) -> HttpResponse:
    project, role = project_for_retrain_decision(user=request.user, project_id=project_id)
    proposal = retrain_proposal_in_project(project, proposal_id)
    try:
        accepted = retrain_accept(proposal=proposal, user=request.user)
    except ApplicationError as refused:
        proposal.refresh_from_db()
        return _detail_page(
            request,
            project=project,
            role=role,
            proposal=proposal,
            error=refused.message,
            status=refused.status_code,
        )
    messages.success(request, f"Accepted: training job {accepted.training_job_id} is queued.")
    return redirect("retrain_proposal", project_id, proposal_id)


@login_required
@require_POST
def retrain_page_dismiss(request: AppRequest, project_id: int, proposal_id: int) -> HttpResponse:
    project, role = project_for_retrain_decision(user=request.user, project_id=project_id)
    proposal = retrain_proposal_in_project(project, proposal_id)
    try:
        retrain_dismiss(proposal=proposal, user=request.user, note=request.POST.get("note", ""))
    except ApplicationError as refused:
        proposal.refresh_from_db()
        return _detail_page(
            request,
            project=project,
            role=role,
            proposal=proposal,
            error=refused.message,
            status=refused.status_code,
        )
    messages.success(request, "Dismissed: nothing was launched.")
    return redirect("retrain_proposal", project_id, proposal_id)
