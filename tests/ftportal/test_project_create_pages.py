"""The new-project page, reached from the project list by those who may create projects, and
a project's settings page, for its admins: what is typed comes back with the reason when it is
refused, and a refused request changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ftportal.models import Membership, Project
from ftportal.roles import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return User.objects.create_user(username="site-admin", password="pw", is_staff=True)


def test_the_project_list_offers_a_new_project_only_to_those_who_may_create_one(
    client: Client, staff: User, make_member: Callable[[Role], User]
) -> None:
    client.force_login(make_member(Role.ADMIN))
    assert 'id="new-project-link"' not in client.get(reverse("project_list")).content.decode()

    client.force_login(staff)
    page = client.get(reverse("project_list")).content.decode()
    assert f'href="{reverse("project_new")}"' in page


def test_the_form_creates_the_project_with_its_members(client: Client, staff: User) -> None:
    User.objects.create_user(username="dana", password="pw")
    client.force_login(staff)

    response = client.post(
        reverse("project_new"),
        {
            "name": "Intent triage",
            "description": "Route tickets",
            "default_system_prompt": "Answer with one intent label.",
            "member_0_username": "dana",
            "member_0_role": "reviewer",
            "member_1_username": "",
            "member_1_role": "admin",
        },
    )

    project = Project.objects.get(name="Intent triage")
    assert response.status_code == 302
    assert response["Location"] == reverse("project_detail", args=[project.pk])
    assert project.default_system_prompt == "Answer with one intent label."
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"site-admin": "admin", "dana": "reviewer"}


def test_a_refused_form_names_the_row_at_fault_and_keeps_what_was_typed(
    client: Client, staff: User
) -> None:
    User.objects.create_user(username="dana", password="pw")
    client.force_login(staff)

    response = client.post(
        reverse("project_new"),
        {
            "name": "Intent <triage>",
            "default_system_prompt": "Answer briefly.",
            "member_0_username": "dana",
            "member_0_role": "reviewer",
            "member_2_username": "nobody",
            "member_2_role": "manager",
        },
    )

    page = response.content.decode()
    assert response.status_code == 400
    assert "Member row 3: no user &#x27;nobody&#x27;" in page
    assert 'value="Intent &lt;triage&gt;"' in page and "Answer briefly.</textarea>" in page
    assert 'value="nobody"' in page
    assert not Project.objects.exists()


def test_others_get_a_403_page(client: Client, make_member: Callable[[Role], User]) -> None:
    client.force_login(make_member(Role.ADMIN))

    response = client.post(reverse("project_new"), {"name": "Mine"})

    assert response.status_code == 403
    assert "Creating projects is for site staff" in response.content.decode()
    assert list(Project.objects.values_list("name", flat=True)) == ["Ticket triage"]


def test_the_projects_admin_edits_the_default_system_prompt(
    client: Client, project: Project, make_member: Callable[[Role], User]
) -> None:
    client.force_login(make_member(Role.ADMIN))
    overview = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    url = reverse("project_settings", args=[project.pk])
    assert f'href="{url}"' in overview

    response = client.post(
        url,
        {
            "name": project.name,
            "description": project.description,
            "default_system_prompt": "Reply with the intent <only>.",
        },
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.default_system_prompt == "Reply with the intent <only>."
    page = client.get(url).content.decode()
    assert "Reply with the intent &lt;only&gt;.</textarea>" in page


def test_a_refused_setting_is_shown_with_the_reason(
    client: Client, project: Project, make_member: Callable[[Role], User]
) -> None:
    Project.objects.create(name="Other")
    client.force_login(make_member(Role.ADMIN))

    response = client.post(
        reverse("project_settings", args=[project.pk]),
        {"name": "other", "description": "", "default_system_prompt": "Typed"},
    )

    assert response.status_code == 409
    page = response.content.decode()
    assert "a project named" in page and 'value="other"' in page and "Typed</textarea>" in page
    project.refresh_from_db()
    assert project.default_system_prompt == "" and project.name == "Ticket triage"


@pytest.mark.parametrize("role", [Role.ML_LEAD, Role.REVIEWER, Role.MANAGER])
def test_other_roles_may_not_open_the_settings(
    client: Client, project: Project, make_member: Callable[[Role], User], role: Role
) -> None:
    client.force_login(make_member(role))
    url = reverse("project_settings", args=[project.pk])

    assert client.get(url).status_code == 403
    assert client.post(url, {"name": "x", "default_system_prompt": "y"}).status_code == 403
    assert (
        'id="settings-link"'
        not in client.get(reverse("project_detail", args=[project.pk])).content.decode()
    )
    project.refresh_from_db()
    assert project.name == "Ticket triage"


def test_an_outsider_gets_a_404(client: Client, project: Project, staff: User) -> None:
    client.force_login(staff)  # staff, but no member of the project

    assert client.get(reverse("project_settings", args=[project.pk])).status_code == 404
