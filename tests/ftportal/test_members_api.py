"""Admins manage members and roles through the API; every change lands in the audit log."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from ftportal.models import AuditAction, AuditEntry, Membership, Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "correct-horse-battery-staple-42"


def members_url(project: Project, suffix: str = "") -> str:
    return f"/api/projects/{project.pk}/members/{suffix}"


@pytest.fixture
def admin_user(make_member: Callable[..., User]) -> User:
    return make_member(Role.ADMIN)


@pytest.fixture
def admin(admin_user: User) -> APIClient:
    return token_client(admin_user)


def state() -> tuple[list[tuple[int, int, str]], int, int]:
    members = sorted(Membership.objects.values_list("project", "user", "role"))
    return members, User.objects.count(), AuditEntry.objects.count()


def test_an_admin_lists_the_members_with_their_roles(
    project: Project, admin: APIClient, admin_user: User, make_member: Callable[..., User]
) -> None:
    lead = make_member(Role.ML_LEAD)

    page = admin.get(members_url(project)).json()

    assert page["count"] == 2
    rows = {
        row["username"]: (row["user"], row["role"], row["role_label"]) for row in page["results"]
    }
    assert rows == {
        admin_user.username: (admin_user.pk, "admin", "Admin"),
        lead.username: (lead.pk, "ml_lead", "ML lead"),
    }


def test_adding_an_existing_user_gives_them_the_role_and_is_audited(
    project: Project, admin: APIClient, admin_user: User
) -> None:
    newcomer = User.objects.create_user(username="newcomer", password="pw")

    response = admin.post(
        members_url(project), {"username": "newcomer", "role": "reviewer"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json() == {
        "user": newcomer.pk,
        "username": "newcomer",
        "role": "reviewer",
        "role_label": "Reviewer",
        "generated_password": "",
    }
    assert Membership.objects.get(project=project, user=newcomer).role == Role.REVIEWER
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.member) == (
        admin_user,
        AuditAction.MEMBER_ADDED,
        newcomer,
    )
    assert (entry.before, entry.after) == ({}, {"role": "reviewer"})


def test_a_new_user_gets_a_generated_password_shown_once_that_works(
    project: Project, admin: APIClient
) -> None:
    response = admin.post(
        members_url(project),
        {"username": "fresh", "role": "manager", "create_user": True},
        format="json",
    )

    assert response.status_code == 201, response.content
    password = response.json()["generated_password"]
    assert len(password) >= 12
    token = APIClient().post(
        "/api/auth/token/", {"username": "fresh", "password": password}, format="json"
    )
    assert token.status_code == 200
    # Never again: the list and the audit log carry no password.
    assert password not in admin.get(members_url(project)).content.decode()
    assert password not in admin.get(members_url(project, "audit/")).content.decode()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.after) == (AuditAction.USER_CREATED, {"role": "manager"})


def test_a_new_user_may_get_the_password_the_admin_chose(
    project: Project, admin: APIClient
) -> None:
    response = admin.post(
        members_url(project),
        {
            "username": "chosen",
            "role": "reviewer",
            "create_user": True,
            "password": STRONG_PASSWORD,
        },
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["generated_password"] == ""
    assert User.objects.get(username="chosen").check_password(STRONG_PASSWORD)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"username": "nobody", "role": "reviewer"}, 400, "username"),
        ({"username": "taken", "role": "reviewer", "create_user": True}, 409, "username"),
        (
            {"username": "weak", "role": "reviewer", "create_user": True, "password": "123"},
            400,
            "password",
        ),
        ({"username": "taken", "role": "reviewer", "password": STRONG_PASSWORD}, 400, "password"),
        ({"username": "taken", "role": "owner"}, 400, "role"),
    ],
    ids=["no such user", "name taken", "weak password", "password for existing", "no such role"],
)
def test_a_bad_addition_says_which_field_and_changes_nothing(
    project: Project, admin: APIClient, body: dict[str, object], status: int, field: str
) -> None:
    User.objects.create_user(username="taken", password="pw")
    before = state()

    response = admin.post(members_url(project), body, format="json")

    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error.get("field") == field or field in error.get("fields", {})
    assert state() == before


def test_adding_someone_who_is_already_a_member_is_a_conflict(
    project: Project, admin: APIClient, make_member: Callable[..., User]
) -> None:
    lead = make_member(Role.ML_LEAD)
    before = state()
    response = admin.post(
        members_url(project), {"username": lead.username, "role": "reviewer"}, format="json"
    )
    assert response.status_code == 409
    assert "already a member" in response.json()["error"]["message"]
    assert state() == before


def test_changing_a_role_records_before_and_after(
    project: Project, admin: APIClient, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)

    response = admin.patch(
        members_url(project, f"{reviewer.pk}/"), {"role": "ml_lead"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["role"] == "ml_lead"
    assert Membership.objects.get(project=project, user=reviewer).role == Role.ML_LEAD
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.member, entry.before, entry.after) == (
        AuditAction.ROLE_CHANGED,
        reviewer,
        {"role": "reviewer"},
        {"role": "ml_lead"},
    )


def test_removing_a_member_ends_their_access_and_is_audited(
    project: Project, admin: APIClient, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    assert token_client(reviewer).get(f"/api/projects/{project.pk}/").status_code == 200

    response = admin.delete(members_url(project, f"{reviewer.pk}/"))

    assert response.status_code == 204
    assert token_client(reviewer).get(f"/api/projects/{project.pk}/").status_code == 404
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.before, entry.after) == (
        AuditAction.MEMBER_REMOVED,
        {"role": "reviewer"},
        {},
    )


@pytest.mark.parametrize("how", ["demote", "remove"])
def test_the_last_admin_can_be_neither_demoted_nor_removed(
    project: Project, admin: APIClient, admin_user: User, how: str
) -> None:
    before = state()
    url = members_url(project, f"{admin_user.pk}/")

    if how == "demote":
        response = admin.patch(url, {"role": "manager"}, format="json")
    else:
        response = admin.delete(url)

    assert response.status_code == 409, response.content
    assert "last admin" in response.json()["error"]["message"]
    assert state() == before


def test_with_a_second_admin_the_first_may_step_down(
    project: Project, admin: APIClient, admin_user: User, make_member: Callable[..., User]
) -> None:
    make_member(Role.ADMIN)
    response = admin.patch(
        members_url(project, f"{admin_user.pk}/"), {"role": "manager"}, format="json"
    )
    assert response.status_code == 200
    assert Membership.objects.get(project=project, user=admin_user).role == Role.MANAGER


def test_the_audit_log_lists_changes_newest_first_with_who_and_when(
    project: Project, admin: APIClient, admin_user: User, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    admin.patch(members_url(project, f"{reviewer.pk}/"), {"role": "ml_lead"}, format="json")
    admin.delete(members_url(project, f"{reviewer.pk}/"))

    page = admin.get(members_url(project, "audit/")).json()

    assert page["count"] == 2
    assert [(e["action"], e["actor"], e["member"]) for e in page["results"]] == [
        ("member_removed", admin_user.username, reviewer.username),
        ("role_changed", admin_user.username, reviewer.username),
    ]
    assert page["results"][1]["action_label"] == "changed a role"
    assert all(e["created_at"] for e in page["results"])


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ML_LEAD, Role.MANAGER], ids=lambda r: r.value)
def test_only_admins_read_or_change_members(
    project: Project, make_member: Callable[..., User], admin_user: User, role: Role
) -> None:
    client = token_client(make_member(role))
    other = make_member(Role.REVIEWER)
    before = state()

    answers = [
        client.get(members_url(project)).status_code,
        client.get(members_url(project, "audit/")).status_code,
        client.post(
            members_url(project), {"username": other.username, "role": "admin"}, format="json"
        ).status_code,
        client.patch(
            members_url(project, f"{other.pk}/"), {"role": "admin"}, format="json"
        ).status_code,
        client.delete(members_url(project, f"{other.pk}/")).status_code,
    ]

    assert answers == [403] * 5
    assert state() == before


def test_a_non_member_learns_nothing_and_an_admin_elsewhere_cannot_reach_in(
    project: Project, make_member: Callable[..., User], admin_user: User
) -> None:
    outsider = token_client(User.objects.create_user(username="outsider", password="pw"))
    other = Project.objects.create(name="Other team")
    admin_elsewhere = token_client(make_member(Role.ADMIN, target=other))
    before = state()

    assert outsider.get(members_url(project)).status_code == 404
    assert outsider.delete(members_url(project, f"{admin_user.pk}/")).status_code == 404
    # A user id from another project is not found through one's own project.
    response = admin_elsewhere.patch(
        members_url(other, f"{admin_user.pk}/"), {"role": "reviewer"}, format="json"
    )
    assert response.status_code == 404
    assert state() == before


def test_the_audit_log_cannot_be_rewritten(
    project: Project, admin: APIClient, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    admin.patch(members_url(project, f"{reviewer.pk}/"), {"role": "ml_lead"}, format="json")
    entry = AuditEntry.objects.get()

    entry.after = {"role": "admin"}
    with pytest.raises(TypeError, match="append-only"):
        entry.save()
    with pytest.raises(TypeError, match="append-only"):
        entry.delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditEntry.objects.filter(pk=entry.pk).update(after={})
    with pytest.raises(TypeError, match="append-only"):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().after == {"role": "ml_lead"}
