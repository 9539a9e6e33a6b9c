"""The core's pages: the project list, a new project (for those who may create one), a
project's settings (its admins), a project's members page (adding or creating members,
changing their roles, removing them), the health check the container and monitoring read
(JSON), and the favicon. A project's overview gathers every app, so the site serves it
(config.views)."""

from __future__ import annotations

import re
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control

from .errors import ApplicationError
from .health import health_sections
from .http import AppRequest, parse_id
from .models import Membership, Project
from .permissions import may_create_projects, project_for, refuse_unless_may_create_projects
from .roles import Action, Role
from .selectors import audit_entries, project_member, project_members, queues_attendance
from .services import (
    MemberSpec,
    member_add,
    member_create,
    member_remove,
    member_role_change,
    project_create,
    project_update,
)

# How many audit entries the members page shows; the API pages through all of them.
AUDIT_ENTRIES_SHOWN = 100
# Member rows on the new-project form; the members page adds more once the project exists.
NEW_PROJECT_MEMBER_ROWS = 5


@login_required
def project_list(request: AppRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user_id=request.user.pk).select_related("project")
    context = {"memberships": memberships, "may_create_projects": may_create_projects(request.user)}
    return render(request, "ftportal/project_list.html", context)


def _member_rows(post: QueryDict) -> list[dict[str, str]]:
    """The form's member rows as typed (usernames and roles), for showing them again."""
    return [
        {
            "username": post.get(f"member_{row}_username", ""),
            "role": post.get(f"member_{row}_role", ""),
        }
        for row in range(NEW_PROJECT_MEMBER_ROWS)
    ]


def _in_form_rows(refused: ApplicationError, given: list[int]) -> str:
    """The service names a member by its place among those given (``members[1].username:
    ...``); the page says which row of the form that is."""
    found = re.match(r"members\[(\d+)\]\.\w+: (.*)", refused.message, re.DOTALL)
    if found is None or int(found.group(1)) >= len(given):
        return refused.message
    return f"Member row {given[int(found.group(1))] + 1}: {found.group(2)}"


@login_required
def project_new(request: AppRequest) -> HttpResponse:
    """A new project with its description, default system prompt and first members; the
    creator becomes its admin. For site staff and users with the add-project permission."""
    refuse_unless_may_create_projects(request.user)
    rows = _member_rows(request.POST)
    context: dict[str, object] = {"roles": list(Role), "rows": rows, "form": request.POST}
    if request.method != "POST":
        return render(request, "ftportal/project_new.html", context)
    # Rows left without a username are the form's spare rows.
    given = [number for number, row in enumerate(rows) if row["username"].strip()]
    try:
        project = project_create(
            creator=request.user,
            name=request.POST.get("name", ""),
            description=request.POST.get("description", ""),
            default_system_prompt=request.POST.get("default_system_prompt", ""),
            members=[
                MemberSpec(role=rows[number]["role"], username=rows[number]["username"])
                for number in given
            ],
        )
    except ApplicationError as refused:
        context["error"] = _in_form_rows(refused, given)
        return render(request, "ftportal/project_new.html", context, status=refused.status_code)
    messages.success(request, f"Created {project.name}; you are its admin.")
    return redirect("project_detail", project.pk)


@login_required
def project_settings(request: AppRequest, project_id: int) -> HttpResponse:
    """The project's name, description and default system prompt, changed by its admins."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.EDIT_PROJECT
    )
    saved = {
        "name": project.name,
        "description": project.description,
        "default_system_prompt": project.default_system_prompt,
    }
    context: dict[str, object] = {"project": project, "role": role, "values": saved}
    if request.method != "POST":
        return render(request, "ftportal/project_settings.html", context)
    typed = {name: request.POST.get(name, "") for name in saved}
    try:
        project_update(project=project, **typed)
    except ApplicationError as refused:
        project.refresh_from_db()
        # Shown again as typed, with the reason, so only the field at fault needs changing.
        context.update({"error": refused.message, "values": typed})
        return render(
            request, "ftportal/project_settings.html", context, status=refused.status_code
        )
    messages.success(request, "Saved the project's settings.")
    return redirect("project_settings", project.pk)


def _member_change(request: AppRequest, project: Project) -> str:
    """Add, change or remove as posted; answers what happened, in words.

    Creating a user is the members view's own, since its answer carries a password.
    """
    post = request.POST
    operation = post.get("operation", "")
    role = post.get("role", "")
    if operation == "add":
        username = post.get("username", "").strip()
        member_add(project=project, actor=request.user, username=username, role=role)
        return f"Added {username} as {Role(role).label}."
    user_id = post.get("user", "")
    if parse_id(user_id) is None:
        raise ApplicationError("user: choose a member.", extra={"field": "user"})
    membership = project_member(project, int(user_id))
    name = membership.user.username
    if operation == "change":
        member_role_change(membership=membership, actor=request.user, role=role)
        return f"{name} is now {Role(role).label}."
    if operation == "remove":
        member_remove(membership=membership, actor=request.user)
        return f"Removed {name} from the project."
    raise ApplicationError("operation: choose add, change or remove.", extra={"field": "operation"})


@login_required
def members(request: AppRequest, project_id: int) -> HttpResponse:
    """Admins add existing or new users, change roles and remove members; all audited."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
    )
    status = 200
    error = ""
    generated_password = ""
    created_username = ""
    if request.method == "POST":
        try:
            if request.POST.get("operation") == "create":
                created = member_create(
                    project=project,
                    actor=request.user,
                    username=request.POST.get("username", ""),
                    role=request.POST.get("role", ""),
                    password=request.POST.get("password", ""),
                )
                # Rendered once, not redirected: the password is never stored in clear.
                generated_password = created.generated_password
                created_username = created.membership.user.username
                if not generated_password:
                    messages.success(request, f"Created {created_username}.")
                    return redirect("members", project_id)
            else:
                messages.success(request, _member_change(request, project))
                return redirect("members", project_id)
        except ApplicationError as refused:
            status, error = refused.status_code, refused.message
    context = {
        "project": project,
        "role": role,
        "members": project_members(project),
        "roles": list(Role),
        "audit_entries": audit_entries(project)[:AUDIT_ENTRIES_SHOWN],
        "members_error": error,
        "generated_password": generated_password,
        "created_username": created_username,
    }
    return render(request, "ftportal/members.html", context, status=status)


def healthz(request: HttpRequest) -> HttpResponse:
    """Health for the container check and for monitoring, as JSON: the process serves, the
    database answers, and per queue how many workers listen and when one was last seen.

    A missing worker makes the status "degraded" but keeps HTTP 200, so that the web
    container is not restarted because a worker is down; ``?workers=required`` answers 503
    unless every queue has a worker (for a monitor that should page someone).

    Higher apps add their figures about this process (``ftportal.health``): the gateway's
    ``request_log`` (rows queued, rows dropped since the process started), read at the
    gateway's own origin."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    queues = queues_attendance()
    all_attended = all(queue.attended for queue in queues.values())
    body = {
        "status": "ok" if all_attended else "degraded",
        "database": "ok",
        "queues": {
            name: {
                "workers": queue.workers,
                "last_seen": queue.last_seen.isoformat() if queue.last_seen else None,
            }
            for name, queue in queues.items()
        },
        **health_sections(),
    }
    required = request.GET.get("workers") == "required"
    return JsonResponse(body, status=503 if required and not all_attended else 200)


FAVICON_MAX_AGE_S = 7 * 24 * 3600


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on every page whatever the page links: the same
    static file the pages link, served by the app so that it never depends on how (or
    whether) the static files are served."""
    path = finders.find("favicon.ico")
    if not isinstance(path, str):
        raise Http404("favicon.ico is missing from the static files")
    response = HttpResponse(Path(path).read_bytes(), content_type="image/vnd.microsoft.icon")
    patch_cache_control(response, public=True, max_age=FAVICON_MAX_AGE_S)
    return response
