"""The catalog's API under /api/projects/<project_id>/: the provider endpoints admins
registered (read-only; members pick one for candidates and judges)."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api

project_api_patterns: list[URLPattern] = [
    path("endpoints/", api.EndpointListApi.as_view(), name="endpoint_list"),
]
