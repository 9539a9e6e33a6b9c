"""Fixtures for API tests; the plain builders they use live in builders.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role

from .builders import World, build_world, token_client


@pytest.fixture
def client_as(make_member: Callable[..., User]) -> Callable[..., APIClient]:
    def make(role: Role, *, target: Project | None = None) -> APIClient:
        return token_client(make_member(role, target=target))

    return make


@pytest.fixture
def world(project: Project, make_member: Callable[..., User], base_model: BaseModel) -> World:
    return build_world(project=project, owner=make_member(Role.ML_LEAD), base_model=base_model)
