"""Projects through the API: POST /api/projects/ creates one with its members and default
system prompt (site staff and holders of the add-project permission; 403 for everyone else,
changing nothing), and PATCH /api/projects/<id>/ changes its settings (its admins only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from ftportal.models import AuditEntry, Membership, Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return User.objects.create_user(username="site-admin", password="pw", is_staff=True)


@pytest.fixture
def dana() -> User:
    return User.objects.create_user(username="dana", password="pw")


def everything() -> dict[str, object]:
    return {
        "projects": sorted(
            Project.objects.values_list("name", "description", "default_system_prompt")
        ),
        "members": sorted(Membership.objects.values_list("project", "user", "role")),
        "audit": AuditEntry.objects.count(),
    }


def test_staff_create_a_project_with_members_and_a_default_system_prompt(
    staff: User, dana: User
) -> None:
    lee = User.objects.create_user(username="lee", password="pw")

    response = token_client(staff).post(
        "/api/projects/",
        {
            "name": "Intent triage",
            "description": "Route tickets",
            "default_system_prompt": "Answer with one intent label.",
            "members": [
                {"username": "dana", "role": "reviewer"},
                {"user": lee.pk, "role": "ml_lead"},
            ],
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    project = Project.objects.get(pk=body["id"])
    assert body["name"] == project.name == "Intent triage"
    assert body["default_system_prompt"] == project.default_system_prompt
    assert project.default_system_prompt == "Answer with one intent label."
    assert body["role"] == "admin"
    assert sorted((m["username"], m["role"]) for m in body["members"]) == [
        ("dana", "reviewer"),
        ("lee", "ml_lead"),
        ("site-admin", "admin"),
    ]
    # The new members see it among their projects, with their role.
    listed = token_client(dana).get("/api/projects/").json()["results"]
    assert [(p["name"], p["role"]) for p in listed] == [("Intent triage", "reviewer")]


def test_a_holder_of_the_add_project_permission_may_create_one(dana: User) -> None:
    dana.user_permissions.add(Permission.objects.get(codename="add_project"))

    response = token_client(dana).post("/api/projects/", {"name": "Dana's"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["members"] == [
        {"user": dana.pk, "username": "dana", "role": "admin", "role_label": "Admin"}
    ]


def test_anyone_else_gets_403_and_nothing_changes(
    make_member: Callable[[Role], User], dana: User
) -> None:
    # An admin of another project too: creating projects is the site's right, not a role's.
    for user in (dana, make_member(Role.ADMIN)):
        client = token_client(user)
        before = everything()

        response = client.post("/api/projects/", {"name": "Mine"}, format="json")

        assert response.status_code == 403, response.content
        assert "Creating projects is for site staff" in response.json()["error"]["message"]
        assert everything() == before


def test_without_credentials_it_is_401() -> None:
    assert APIClient().post("/api/projects/", {"name": "x"}, format="json").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "members": [{"username": "dana", "role": "owner"}]}, "members"),
        ({"name": "X", "members": [{"username": "dana", "role": "reviewer", "x": 1}]}, "members"),
        ({"name": "X", "owner": "dana"}, "owner"),
        ({"description": "no name"}, "name"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    staff: User, dana: User, body: dict[str, object], field: str
) -> None:
    before = everything()

    response = token_client(staff).post("/api/projects/", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert everything() == before


@pytest.mark.parametrize(
    ("member", "field"),
    [
        ({"username": "nobody", "role": "reviewer"}, "members[0].username"),
        ({"user": 999_999, "role": "reviewer"}, "members[0].user"),
        ({"role": "reviewer"}, "members[0]"),
    ],
)
def test_a_member_who_cannot_be_found_is_named_by_place(
    staff: User, member: dict[str, object], field: str
) -> None:
    before = everything()

    response = token_client(staff).post(
        "/api/projects/", {"name": "X", "members": [member]}, format="json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert everything() == before


def test_a_taken_name_is_a_conflict_naming_the_field(staff: User) -> None:
    Project.objects.create(name="Intent triage")

    response = token_client(staff).post("/api/projects/", {"name": "intent triage"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["field"] == "name"


def test_the_projects_admin_changes_its_settings(
    project: Project, make_member: Callable[[Role], User]
) -> None:
    client = token_client(make_member(Role.ADMIN))

    response = client.patch(
        f"/api/projects/{project.pk}/",
        {"default_system_prompt": "Reply with the intent only."},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["default_system_prompt"] == "Reply with the intent only."
    project.refresh_from_db()
    assert project.default_system_prompt == "Reply with the intent only."
    detail = client.get(f"/api/projects/{project.pk}/").json()
    assert detail["default_system_prompt"] == "Reply with the intent only."


@pytest.mark.parametrize("role", [Role.ML_LEAD, Role.REVIEWER, Role.MANAGER])
def test_other_roles_may_not_change_the_settings(
    project: Project, make_member: Callable[[Role], User], role: Role
) -> None:
    client = token_client(make_member(role))
    before = everything()

    response = client.patch(
        f"/api/projects/{project.pk}/", {"default_system_prompt": "Mine"}, format="json"
    )

    assert response.status_code == 403
    assert f"Your role '{role.value}'" in response.json()["error"]["message"]
    assert everything() == before


def test_an_outsider_cannot_tell_the_project_exists(project: Project, dana: User) -> None:
    response = token_client(dana).patch(
        f"/api/projects/{project.pk}/", {"name": "Taken over"}, format="json"
    )

    assert response.status_code == 404
    project.refresh_from_db()
    assert project.name != "Taken over"


def test_the_schema_documents_creation_and_the_settings() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    create = schema["paths"]["/api/projects/"]["post"]
    update = schema["paths"]["/api/projects/{project_id}/"]["patch"]

    assert "site staff" in create["summary"] and "403" in create["responses"]
    assert "201" in create["responses"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = body.rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][name]["properties"]
    assert {"name", "description", "default_system_prompt", "members"} <= set(properties)
    patched = update["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    patchable = schema["components"]["schemas"][patched.rsplit("/", 1)[-1]]["properties"]
    assert set(patchable) == {"name", "description", "default_system_prompt"}
