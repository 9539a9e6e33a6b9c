"""The core's pages (the project list, a new project, a project's settings and members) and
API: under /api/, the sign-in token, the project list and creating a project; under
/api/projects/<project_id>/, the project (read, and changed by its admins) and its members."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, auth_api, views

page_patterns: list[URLPattern] = [
    path("", views.project_list, name="project_list"),
    path("projects/new/", views.project_new, name="project_new"),
    path("projects/<int:project_id>/settings/", views.project_settings, name="project_settings"),
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
