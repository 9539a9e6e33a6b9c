"""Permission helpers called first in every page and API view."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.http import Http404

from .errors import PermissionDeniedError
from .models import Membership, Project
from .roles import Action, role_allows

AnyUser = AbstractBaseUser | AnonymousUser
# Django's model permission for creating projects ("Can add project"), granted in its admin.
ADD_PROJECT_PERMISSION = "ftportal.add_project"


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


def may_create_projects(user: AnyUser) -> bool:
    """Whether ``user`` may create projects: a right over the whole site, not a role in a
    project (nobody has a role in a project that does not exist yet). Site staff, who run the
    site and its Django admin, may; so may anyone granted Django's ``ftportal.add_project``
    permission, directly or through a group (a superuser holds every permission). Everyone
    else asks one of them; the creator becomes the new project's admin."""
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(getattr(user, "is_staff", False)) or (
        isinstance(user, PermissionsMixin) and user.has_perm(ADD_PROJECT_PERMISSION)
    )


def refuse_unless_may_create_projects(user: AnyUser) -> None:
    if not may_create_projects(user):
        raise PermissionDeniedError(
            "Creating projects is for site staff and users granted the permission to add "
            "projects; ask one of them to create it, or to grant you the permission."
        )
