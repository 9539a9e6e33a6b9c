"""Writes to projects: members and their roles, each recorded in the append-only audit log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .errors import ApplicationError, ConflictError
from .models import AuditAction, AuditEntry, Membership, Project
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
