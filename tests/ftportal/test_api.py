"""The JSON API's way in: a token for a username and password authenticates every call, a
request without one or with a bad one is refused with the error shape, and the project list
shows only my projects, each with my role."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from ftportal.models import Project
from tests.api.builders import api
from tests.api.fixtures import lead_client_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


def test_a_token_obtained_with_username_and_password_authenticates_api_calls(
    lead: User, project: Project
) -> None:
    anonymous = APIClient()
    response = anonymous.post(
        "/api/auth/token/", {"username": lead.username, "password": "pw"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]

    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    projects = anonymous.get("/api/projects/")

    assert projects.status_code == 200
    assert projects.json()["results"] == [
        {
            "id": project.pk,
            "name": project.name,
            "description": project.description,
            "created_at": projects.json()["results"][0]["created_at"],
            "role": "ml_lead",
        }
    ]


def test_a_wrong_password_gets_no_token(lead: User) -> None:
    response = APIClient().post(
        "/api/auth/token/", {"username": lead.username, "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert "token" not in response.json()


@pytest.mark.parametrize(
    "path", ["/api/projects/", "/api/projects/{project}/", "/api/projects/{project}/datasets/"]
)
def test_requests_without_credentials_are_refused_with_the_error_shape(
    project: Project, path: str
) -> None:
    response = APIClient().get(path.format(project=project.pk))
    assert response.status_code == 401
    assert response.json()["error"]["message"]


def test_a_bad_token_is_refused(project: Project) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/projects/").status_code == 401


def test_the_project_list_shows_only_my_projects_with_my_role(
    client: APIClient, project: Project, lead: User
) -> None:
    Project.objects.create(name="Someone else's")
    response = client.get("/api/projects/")
    assert [(p["name"], p["role"]) for p in response.json()["results"]] == [
        (project.name, "ml_lead")
    ]

    detail = client.get(api(project))
    assert detail.status_code == 200
    assert detail.json()["role"] == "ml_lead"
