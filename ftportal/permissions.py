"""Permission helpers called first in every page and API view."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import Http404

from .errors import PermissionDeniedError
from .models import Membership, Project
from .roles import Action, role_allows

AnyUser = AbstractBaseUser | AnonymousUser


def member_role(*, user: AnyUser, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(project=project, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )


def project_for(*, user: AnyUser, project_id: int, action: Action) -> tuple[Project, str]:
    """Load a project the user may act on, or fail.

    Non-members get 404 so that project ids do not leak; members without the role get 403.
    """
    project = Project.objects.filter(pk=project_id).first()
    role = member_role(user=user, project=project) if project else None
    if project is None or role is None:
        raise Http404("No such project")
    if not role_allows(role, action):
        raise PermissionDeniedError(
            f"Your role '{role}' in project '{project.name}' does not allow you to {action.label}."
        )
    return project, role
