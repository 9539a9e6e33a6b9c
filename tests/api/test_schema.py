"""The OpenAPI schema generates cleanly and documents the lifecycle endpoints."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from ftportal.roles import Role
from ftportal.schema import STANDARD_ERRORS
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

LIFECYCLE_PATHS = [
    "/api/auth/token/",
    "/api/projects/{project_id}/datasets/{dataset_id}/imports/",
    "/api/projects/{project_id}/datasets/{dataset_id}/versions/",
    "/api/projects/{project_id}/dataset-versions/{version_id}/export/",
    "/api/projects/{project_id}/examples/{example_id}/review/",
    "/api/projects/{project_id}/training-jobs/",
    "/api/projects/{project_id}/training-jobs/{job_id}/cancel/",
    "/api/projects/{project_id}/model-versions/{version_id}/",
    "/api/projects/{project_id}/model-versions/{version_id}/promote/",
    "/api/projects/{project_id}/models/{model_id}/rollback/",
    "/api/projects/{project_id}/evaluations/",
    "/api/projects/{project_id}/evaluations/{run_id}/",
]


def test_the_schema_endpoint_serves_every_lifecycle_path(
    make_member: Callable[..., User],
) -> None:
    response = token_client(make_member(Role.REVIEWER)).get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    missing = [path for path in LIFECYCLE_PATHS if path not in paths]
    assert not missing


def test_the_schema_generates_without_warnings_and_validates(tmp_path: Path) -> None:
    # --fail-on-warn turns every drf-spectacular guess (an undocumented view, a clashing
    # component name) into a failure, so the schema stays exact as views are added.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert "/training-jobs/" in (tmp_path / "schema.yml").read_text()


# Any absolute URL: the docs page may name none, since everything it loads is ours.
ABSOLUTE_URL = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.IGNORECASE)


def test_the_interactive_docs_load_from_our_own_static_files(
    make_member: Callable[..., User],
) -> None:
    client = Client()
    client.force_login(make_member(Role.REVIEWER))

    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    # Swagger UI's start-up script is a file of its own (the CSP allows no inline script).
    assert "<script>" not in html
    start = re.search(r'<script src="(/api/docs/\?script=[^"]*)"', html)
    assert start, html
    script = client.get(start.group(1).replace("&amp;", "&")).content.decode()
    assert "SwaggerUIBundle" in script
    assert '"/api/schema/"' in script
    assert ABSOLUTE_URL.findall(html) == []
    assert ABSOLUTE_URL.findall(script) == []
    assets = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    # Every file the page loads is shipped in a package we install: nothing from a CDN.
    assert [asset for asset in assets if finders.find(asset) is None] == []


def test_the_schema_and_the_docs_are_for_signed_in_users_only() -> None:
    # The schema maps every operation and input; anonymous visitors get neither.
    schema = APIClient().get("/api/schema/", {"format": "json"})
    assert schema.status_code == 401
    assert "paths" not in schema.content.decode()
    assert schema.json()["error"]["message"]
    docs = Client().get("/api/docs/")
    assert docs.status_code == 302
    assert docs["Location"].startswith("/login/")


def test_every_operation_documents_the_error_shape_for_the_standard_errors(
    make_member: Callable[..., User],
) -> None:
    schema = token_client(make_member(Role.REVIEWER)).get("/api/schema/", {"format": "json"})
    document = schema.json()
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) > 50
    for path, method, operation in operations:
        for code in STANDARD_ERRORS:
            response = operation["responses"].get(code)
            assert response, f"{method.upper()} {path} does not document {code}"
            if code in ("400", "401", "403", "404", "409", "429"):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (path, method, code)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["message"]
