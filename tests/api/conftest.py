"""Fixtures for API tests; the plain builders they use live in builders.py, and the fixtures that
API tests in app folders import too in fixtures.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from ftportal.models import Project
from ftportal.roles import Role

from .builders import token_client
from .fixtures import api_world_fixture  # noqa: F401  (`world`)


@pytest.fixture
def client_as(make_member: Callable[..., User]) -> Callable[..., APIClient]:
    def make(role: Role, *, target: Project | None = None) -> APIClient:
        return token_client(make_member(role, target=target))

    return make
