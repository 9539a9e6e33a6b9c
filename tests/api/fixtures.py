"""Fixtures that API tests in several app folders share. A test module imports the ones it asks
for by their function names (`from tests.api.fixtures import lead_client_fixture  # noqa: F401`
gives it `client`), as it imports the fakes' fixtures: `client` here is an API client, which a
conftest cannot offer to folders whose page tests read pages with Django's `client`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role

from .builders import World, build_world, token_client


@pytest.fixture(name="client")
def lead_client_fixture(lead: User) -> APIClient:
    """The ML lead's token client."""
    return token_client(lead)


@pytest.fixture(name="world")
def api_world_fixture(
    project: Project, make_member: Callable[..., User], base_model: BaseModel
) -> World:
    return build_world(project=project, owner=make_member(Role.ML_LEAD), base_model=base_model)
