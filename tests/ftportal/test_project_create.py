"""Creating a project (ftportal.services.project_create) and changing its settings: who may,
its members by username or id with their roles, the creator as its admin, everything in one
transaction and audited like any member change, and a clear error naming the field at fault."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from ftportal.errors import ApplicationError, ConflictError, PermissionDeniedError
from ftportal.models import AuditAction, AuditEntry, Membership, Project
from ftportal.permissions import may_create_projects
from ftportal.roles import Role
from ftportal.services import MemberSpec, project_create, project_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return User.objects.create_user(username="site-admin", password="pw", is_staff=True)


@pytest.fixture
def dana() -> User:
    return User.objects.create_user(username="dana", password="pw")


@pytest.fixture
def eli() -> User:
    return User.objects.create_user(username="eli", password="pw")


def everything() -> dict[str, object]:
    """What a refused creation must leave as it was."""
    return {
        "projects": sorted(Project.objects.values_list("name", flat=True)),
        "members": sorted(Membership.objects.values_list("project", "user", "role")),
        "audit": AuditEntry.objects.count(),
    }


def test_staff_create_a_project_with_members_and_become_its_admin(
    staff: User, dana: User, eli: User
) -> None:
    project = project_create(
        creator=staff,
        name="  Intent triage ",
        description="Route support tickets",
        default_system_prompt="  Answer with one intent label.\n",
        members=[
            MemberSpec(role=Role.REVIEWER, username="dana"),
            MemberSpec(role=Role.ML_LEAD, user_id=eli.pk),
        ],
    )

    assert (project.name, project.description) == ("Intent triage", "Route support tickets")
    assert project.default_system_prompt == "Answer with one intent label."
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"site-admin": Role.ADMIN, "dana": Role.REVIEWER, "eli": Role.ML_LEAD}
    audit = list(AuditEntry.objects.filter(project=project).order_by("id"))
    assert [(e.actor, e.action, e.member.username, e.after) for e in audit] == [
        (staff, AuditAction.MEMBER_ADDED, "site-admin", {"role": "admin"}),
        (staff, AuditAction.MEMBER_ADDED, "dana", {"role": "reviewer"}),
        (staff, AuditAction.MEMBER_ADDED, "eli", {"role": "ml_lead"}),
    ]


def test_a_user_granted_the_add_project_permission_may_create_one(dana: User) -> None:
    assert not may_create_projects(dana)
    dana.user_permissions.add(Permission.objects.get(codename="add_project"))
    dana = User.objects.get(pk=dana.pk)  # permissions are cached per instance

    project = project_create(creator=dana, name="Dana's project")

    assert may_create_projects(dana)
    assert Membership.objects.get(project=project).user == dana


def test_anyone_else_is_refused_and_nothing_is_made(dana: User) -> None:
    before = everything()

    with pytest.raises(PermissionDeniedError, match="Creating projects is for site staff"):
        project_create(creator=dana, name="Mine")

    assert everything() == before


def test_an_inactive_staff_member_may_not(staff: User) -> None:
    staff.is_active = False

    assert not may_create_projects(staff)


@pytest.mark.parametrize("taken", ["Intent triage", "intent TRIAGE"])
def test_a_name_in_use_is_refused_naming_the_field(staff: User, taken: str) -> None:
    project_create(creator=staff, name="Intent triage")
    before = everything()

    with pytest.raises(ConflictError) as refused:
        project_create(creator=staff, name=taken)

    assert refused.value.extra == {"field": "name"}
    assert refused.value.message.startswith("name: a project named")
    assert everything() == before


@pytest.mark.parametrize(
    ("name", "message"), [("   ", "give the project a name"), ("x" * 201, "at most 200")]
)
def test_a_bad_name_is_refused_naming_the_field(staff: User, name: str, message: str) -> None:
    with pytest.raises(ApplicationError, match=message) as refused:
        project_create(creator=staff, name=name)

    assert refused.value.extra == {"field": "name"}


@pytest.mark.parametrize(
    ("members", "field", "message"),
    [
        ([MemberSpec(role="owner", username="dana")], "members[0].role", "not a role"),
        ([MemberSpec(role=Role.REVIEWER, username="nobody")], "members[0].username", "no user"),
        ([MemberSpec(role=Role.REVIEWER, user_id=999_999)], "members[0].user", "no user 999999"),
        ([MemberSpec(role=Role.REVIEWER)], "members[0]", "by username or by user id"),
        (
            [
                MemberSpec(role=Role.REVIEWER, username="dana"),
                MemberSpec(role=Role.MANAGER, username="dana"),
            ],
            "members[1].username",
            "listed already",
        ),
        (
            [MemberSpec(role=Role.REVIEWER, username="site-admin")],
            "members[0].username",
            "listed already \\(you, the creator\\)",
        ),
    ],
)
def test_a_bad_member_is_refused_naming_its_place_and_nothing_is_made(
    staff: User, dana: User, members: list[MemberSpec], field: str, message: str
) -> None:
    before = everything()

    with pytest.raises(ApplicationError, match=message) as refused:
        project_create(creator=staff, name="Intent triage", members=members)

    assert refused.value.extra == {"field": field}
    assert refused.value.message.startswith(field)
    assert everything() == before


def test_listing_the_creator_as_admin_changes_nothing(staff: User) -> None:
    project = project_create(
        creator=staff, name="Solo", members=[MemberSpec(role=Role.ADMIN, username="site-admin")]
    )

    assert list(Membership.objects.filter(project=project).values_list("user", "role")) == [
        (staff.pk, Role.ADMIN)
    ]


def test_the_settings_change_what_is_given_and_keep_the_rest(staff: User) -> None:
    project = project_create(creator=staff, name="Intent triage", description="Tickets")
    project_create(creator=staff, name="Other")

    project_update(project=project, default_system_prompt=" Reply with the intent. ")
    project.refresh_from_db()
    assert project.default_system_prompt == "Reply with the intent."
    assert (project.name, project.description) == ("Intent triage", "Tickets")

    with pytest.raises(ConflictError) as refused:
        project_update(project=project, name="other")
    assert refused.value.extra == {"field": "name"}
    project.refresh_from_db()
    assert project.name == "Intent triage"

    project_update(project=project, name="intent triage", default_system_prompt="")
    project.refresh_from_db()
    assert (project.name, project.default_system_prompt) == ("intent triage", "")
