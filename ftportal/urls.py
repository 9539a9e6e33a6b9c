"""The core's pages (the project list, a project's members) and API: under /api/, the
sign-in token and the project list; under /api/projects/<project_id>/, the project and its
members."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, auth_api, views

page_patterns: list[URLPattern] = [
    path("", views.project_list, name="project_list"),
    path("projects/<int:project_id>/members/", views.members, name="members"),
]

api_patterns: list[URLPattern] = [
    path("auth/token/", auth_api.AuthTokenApi.as_view(), name="auth_token"),
    path("projects/", api.ProjectListApi.as_view(), name="project_list"),
]

project_api_patterns: list[URLPattern] = [
    path("", api.ProjectDetailApi.as_view(), name="project_detail"),
    path("members/", api.MemberCollectionApi.as_view(), name="member_list"),
    path("members/audit/", api.AuditLogApi.as_view(), name="member_audit_log"),
    path("members/<int:user_id>/", api.MemberDetailApi.as_view(), name="member_detail"),
]
