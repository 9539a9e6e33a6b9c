"""Writes to projects: creating one with its members, its settings, and members and their
roles, each membership change recorded in the append-only audit log."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .errors import ApplicationError, ConflictError
from .models import AuditAction, AuditEntry, Membership, Project
from .permissions import refuse_unless_may_create_projects
from .roles import Role

# Long enough to be unguessable, short enough to copy once from the page.
GENERATED_PASSWORD_BYTES = 12


@dataclass(frozen=True)
class NewMember:
    membership: Membership
    # The generated password, shown once; empty when the admin chose it.
    generated_password: str


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        choices = ", ".join(role.value for role in Role)
        raise ApplicationError(
            f"role: '{value}' is not a role; choose one of {choices}.", extra={"field": "role"}
        ) from None


def _record(
    *,
    project: Project,
    actor: User,
    action: AuditAction,
    member: User,
    before: dict[str, str],
    after: dict[str, str],
) -> None:
    AuditEntry.objects.create(
        project=project, actor=actor, action=action, member=member, before=before, after=after
    )


def _lock_admins(project: Project) -> list[int]:
    """Ids of the project's admins, locked so two admins cannot demote each other at once."""
    admins = Membership.objects.select_for_update().filter(project=project, role=Role.ADMIN)
    return [membership.user_id for membership in admins]


def _refuse_losing_the_last_admin(project: Project, membership: Membership, what: str) -> None:
    others = [user_id for user_id in _lock_admins(project) if user_id != membership.user_id]
    if not others:
        raise ConflictError(
            f"{membership.user.get_username()} is the last admin of '{project.name}'; "
            f"make someone else an admin before you {what} them.",
            extra={"field": "role"},
        )


def member_add(*, project: Project, actor: User, username: str, role: str) -> Membership:
    """Give an existing user a role in the project."""
    chosen = _role(role)
    user = User.objects.filter(username=username).first()
    if user is None:
        raise ApplicationError(
            f"username: no user '{username}'; create them instead.", extra={"field": "username"}
        )
    with transaction.atomic():
        if Membership.objects.filter(project=project, user=user).exists():
            raise ConflictError(
                f"username: '{username}' is already a member; change their role instead.",
                extra={"field": "username"},
            )
        membership = Membership.objects.create(project=project, user=user, role=chosen)
        _record(
            project=project,
            actor=actor,
            action=AuditAction.MEMBER_ADDED,
            member=user,
            before={},
            after={"role": chosen.value},
        )
    return membership


def member_create(
    *, project: Project, actor: User, username: str, role: str, password: str = ""
) -> NewMember:
    """Create a user with a password (generated when none is given) and add them."""
    chosen = _role(role)
    username = username.strip()
    if not username:
        raise ApplicationError("username: give the new user a name.", extra={"field": "username"})
    try:
        User._meta.get_field("username").run_validators(username)
    except ValidationError as error:
        raise ApplicationError(
            f"username: {' '.join(error.messages)}", extra={"field": "username"}
        ) from None
    generated = "" if password else secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    candidate = User(username=username)
    try:
        validate_password(password or generated, user=candidate)
    except ValidationError as error:
        raise ApplicationError(
            f"password: {' '.join(error.messages)}", extra={"field": "password"}
        ) from None
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password or generated)
            membership = Membership.objects.create(project=project, user=user, role=chosen)
            _record(
                project=project,
                actor=actor,
                action=AuditAction.USER_CREATED,
                member=user,
                before={},
                after={"role": chosen.value},
            )
    except IntegrityError:
        raise ConflictError(
            f"username: '{username}' is taken; add the existing user instead.",
            extra={"field": "username"},
        ) from None
    return NewMember(membership=membership, generated_password=generated)


def member_role_change(*, membership: Membership, actor: User, role: str) -> Membership:
    chosen = _role(role)
    with transaction.atomic():
        if membership.role == Role.ADMIN and chosen != Role.ADMIN:
            _refuse_losing_the_last_admin(membership.project, membership, "demote")
        before = membership.role
        if before == chosen:
            return membership
        membership.role = chosen
        membership.save(update_fields=["role"])
        _record(
            project=membership.project,
            actor=actor,
            action=AuditAction.ROLE_CHANGED,
            member=membership.user,
            before={"role": before},
            after={"role": chosen.value},
        )
    return membership


def member_remove(*, membership: Membership, actor: User) -> None:
    with transaction.atomic():
        if membership.role == Role.ADMIN:
            _refuse_losing_the_last_admin(membership.project, membership, "remove")
        _record(
            project=membership.project,
            actor=actor,
            action=AuditAction.MEMBER_REMOVED,
            member=membership.user,
            before={"role": membership.role},
            after={},
        )
        membership.delete()


# --- projects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberSpec:
    """One member of a new project: an existing user, named by username or by id (one of the
    two), and the role they get."""

    role: str
    username: str = ""
    user_id: int | None = None


def _project_name(name: str, *, taken_by_another_than: int | None = None) -> str:
    """The name, trimmed, if it may name a project: not empty, not too long, and no other
    project's name (case aside: two projects called "Triage" and "triage" are one too many)."""
    cleaned = name.strip()
    if not cleaned:
        raise ApplicationError("name: give the project a name.", extra={"field": "name"})
    longest = Project._meta.get_field("name").max_length or 0
    if len(cleaned) > longest:
        raise ApplicationError(
            f"name: at most {longest} characters, not {len(cleaned)}.", extra={"field": "name"}
        )
    existing = Project.objects.filter(name__iexact=cleaned)
    if taken_by_another_than is not None:
        existing = existing.exclude(pk=taken_by_another_than)
    if existing.exists():
        raise _name_taken(cleaned)
    return cleaned


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"name: a project named '{name}' exists already; choose another name.",
        extra={"field": "name"},
    )


def _member_user(spec: MemberSpec, field: str) -> User:
    """The user a spec names; ApplicationError naming ``field``'s username or user."""
    username = spec.username.strip()
    if bool(username) == (spec.user_id is not None):
        raise ApplicationError(
            f"{field}: name the user by username or by user id, one of the two.",
            extra={"field": field},
        )
    if spec.user_id is not None:
        user = User.objects.filter(pk=spec.user_id).first()
        if user is None:
            raise ApplicationError(
                f"{field}.user: no user {spec.user_id}.", extra={"field": f"{field}.user"}
            )
        return user
    user = User.objects.filter(username=username).first()
    if user is None:
        raise ApplicationError(
            f"{field}.username: no user '{username}'; they need an account first.",
            extra={"field": f"{field}.username"},
        )
    return user


def _member_role(spec: MemberSpec, field: str) -> Role:
    try:
        return _role(spec.role)
    except ApplicationError as refused:
        raise ApplicationError(
            f"{field}.{refused.message}", extra={"field": f"{field}.role"}
        ) from None


def _new_members(creator: User, members: Sequence[MemberSpec]) -> list[tuple[User, Role]]:
    """The creator as admin, then each listed member once, all checked before anything is
    written; errors name the member's place in the list (``members[2].username``)."""
    chosen: list[tuple[User, Role]] = [(creator, Role.ADMIN)]
    seen = {creator.pk: "you, the creator"}
    for index, spec in enumerate(members):
        field = f"members[{index}]"
        role = _member_role(spec, field)
        user = _member_user(spec, field)
        if user.pk == creator.pk and role == Role.ADMIN:
            continue  # the creator is the admin anyway
        if user.pk in seen:
            what = "user" if spec.user_id is not None else "username"
            raise ApplicationError(
                f"{field}.{what}: {user.get_username()} is listed already ({seen[user.pk]}); "
                "each member has one role.",
                extra={"field": f"{field}.{what}"},
            )
        seen[user.pk] = field
        chosen.append((user, role))
    return chosen


def project_create(
    *,
    creator: User,
    name: str,
    description: str = "",
    default_system_prompt: str = "",
    members: Sequence[MemberSpec] = (),
) -> Project:
    """Create a project with its members; the creator becomes its admin.

    Only those ``ftportal.permissions.may_create_projects`` allows may. Everything is checked
    before anything is written, and the project, its memberships and their audit entries are
    written in one transaction: a bad member leaves no half-made project behind.
    """
    refuse_unless_may_create_projects(creator)
    cleaned = _project_name(name)
    chosen = _new_members(creator, members)
    try:
        with transaction.atomic():
            project = Project.objects.create(
                name=cleaned,
                description=description.strip(),
                default_system_prompt=default_system_prompt.strip(),
            )
            for user, role in chosen:
                Membership.objects.create(project=project, user=user, role=role)
                _record(
                    project=project,
                    actor=creator,
                    action=AuditAction.MEMBER_ADDED,
                    member=user,
                    before={},
                    after={"role": role.value},
                )
    except IntegrityError:
        # Another request created a project of this name since the check above.
        raise _name_taken(cleaned) from None
    return project


def project_update(
    *,
    project: Project,
    name: str | None = None,
    description: str | None = None,
    default_system_prompt: str | None = None,
) -> Project:
    """Change the project's settings; what is left as None stays as it is. The caller has
    checked the role (``Action.EDIT_PROJECT``). A new default system prompt applies to the
    uploads that come after it; examples imported before keep what they were given."""
    changed: list[str] = []
    if name is not None and name.strip() != project.name:
        project.name = _project_name(name, taken_by_another_than=project.pk)
        changed.append("name")
    if description is not None:
        project.description = description.strip()
        changed.append("description")
    if default_system_prompt is not None:
        project.default_system_prompt = default_system_prompt.strip()
        changed.append("default_system_prompt")
    if changed:
        try:
            with transaction.atomic():
                project.save(update_fields=changed)
        except IntegrityError:
            raise _name_taken(project.name) from None
    return project
