"""Pages of application keys: the project's keys for every member; a create form (the new key
shown once, on the answer to the form) and a revoke button for leads and admins."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods, require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, parse_id
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags

from .models import KEY_NAME_MAX_LENGTH, MAX_RATE_LIMIT_PER_MINUTE
from .selectors import application_key_in_project, application_keys_of
from .services import CreatedApplicationKey, application_key_create, application_key_revoke


def _expiry_from(raw: str) -> datetime | None:
    """The form's expiry (a datetime-local field, read as UTC); empty: no expiry."""
    if not raw.strip():
        return None
    try:
        parsed = parse_datetime(raw.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApplicationError(
            "expires_at: a date and time such as 2027-01-31T18:00.", extra={"field": "expires_at"}
        )
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _rate_limit_from(raw: str) -> int | None:
    """The form's rate limit; empty: the site's default."""
    if not raw.strip():
        return None
    parsed = parse_id(raw.strip())
    if parsed is None or not 1 <= parsed <= MAX_RATE_LIMIT_PER_MINUTE:
        raise ApplicationError(
            f"rate_limit_per_minute: a whole number from 1 to {MAX_RATE_LIMIT_PER_MINUTE}.",
            extra={"field": "rate_limit_per_minute"},
        )
    return parsed


def _page(
    request: AppRequest,
    *,
    project: Project,
    role: str,
    created: CreatedApplicationKey | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "role": role,
        "keys": application_keys_of(project),
        "created": created,
        "error": error,
        "form": request.POST if error else {},
        "name_max_length": KEY_NAME_MAX_LENGTH,
        "max_rate_limit": MAX_RATE_LIMIT_PER_MINUTE,
        "now": timezone.now(),
        "can": role_flags(role),
    }
    response = render(request, "serving/app_keys.html", context, status=status)
    if created is not None:
        # The only time the plaintext is on a page: no cache, history or proxy may keep it.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def app_keys(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: the project's keys. POST: create one and show it, this once."""
    if request.method == "GET":
        project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return _page(request, project=project, role=role)
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
    )
    try:
        created = application_key_create(
            project=project,
            user=request.user,
            name=request.POST.get("name", ""),
            expires_at=_expiry_from(request.POST.get("expires_at", "")),
            rate_limit_per_minute=_rate_limit_from(request.POST.get("rate_limit_per_minute", "")),
        )
    except ApplicationError as refused:
        return _page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    return _page(request, project=project, role=role, created=created)


@login_required
@require_POST
def app_key_revoke(request: AppRequest, project_id: int, key_id: int) -> HttpResponse:
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
    )
    key = application_key_revoke(key=application_key_in_project(project, key_id), user=request.user)
    messages.success(request, f"Revoked {key.name} ({key.prefix}…): it no longer works.")
    return redirect("app_keys", project_id)
