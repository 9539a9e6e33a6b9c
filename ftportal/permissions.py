"""Permission helpers called first in every page and API view."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import Http404

from .errors import PermissionDeniedError
from .models import Membership, Project
from .roles import Action, role_allows

AnyUser = AbstractBaseUser | AnonymousUser


def project_for(*, user: AnyUser, project_id: int, action: Action) -> tuple[Project, str]:
    """Load a project the user may act on, or fail.

    Non-members get 404 so that project ids do not leak; members without the role get 403.
    """
    # One query for both: this runs first in every request.
    membership = (
        Membership.objects.select_related("project")
        .filter(project_id=project_id, user_id=user.pk)
        .first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise Http404("No such project")
    project, role = membership.project, membership.role
    if not role_allows(role, action):
        raise PermissionDeniedError(
            f"Your role '{role}' in project '{project.name}' does not allow you to {action.label}."
        )
    return project, role
