"""The base-model catalog API names each hosted model's registered endpoint, by name only: the
worker variable holding that endpoint's key never appears (issue 13, item 1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from catalog.models import BaseModel, EndpointKind, Provider
from catalog.services import endpoint_register
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

SECRET_ENV = "FTPORTAL_TEST_ENDPOINT_KEY"


def test_each_hosted_base_model_names_its_endpoint_and_never_its_secret_variable(
    project: Project, make_member: Callable[[Role], User], base_model: BaseModel
) -> None:
    server = endpoint_register(
        name="acme-vllm",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url="https://llm.acme.example/v1",
        secret_env=SECRET_ENV,
    )
    BaseModel.objects.create(
        key="acme/llama-test",
        display_name="Acme Llama",
        provider=Provider.OPENAI,
        endpoint=server,
    )
    client: APIClient = token_client(make_member(Role.REVIEWER))

    response = client.get(f"/api/projects/{project.pk}/base-models/", {"limit": 100})

    assert response.status_code == 200
    endpoint_of = {row["key"]: row["endpoint"] for row in response.json()["results"]}
    assert endpoint_of["acme/llama-test"] == "acme-vllm"
    assert endpoint_of[base_model.key] is None  # a local model calls no endpoint
    body = response.content.decode()
    assert SECRET_ENV not in body and "secret_env" not in body


def test_the_schema_documents_the_endpoint_as_a_nullable_name() -> None:
    schemas = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    field = schemas["BaseModelOutput"]["properties"]["endpoint"]
    assert field["type"] == "string" and field["nullable"] is True
    assert "endpoint" in field["description"]
