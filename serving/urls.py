"""Serving's pages (application keys, fallback routes, the request log browser), its API under
/api/projects/<project_id>/ (application keys, fallback routes), and the OpenAI-compatible
gateway under /v1/ (``gateway_patterns``)."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, gateway, views

page_patterns: list[URLPattern] = [
    path("projects/<int:project_id>/app-keys/", views.app_keys, name="app_keys"),
    path(
        "projects/<int:project_id>/app-keys/<int:key_id>/revoke/",
        views.app_key_revoke,
        name="app_key_revoke",
    ),
    path("projects/<int:project_id>/routes/", views.fallback_routes, name="fallback_routes"),
    path(
        "projects/<int:project_id>/routes/<int:route_id>/remove/",
        views.route_remove,
        name="fallback_route_remove",
    ),
    path("projects/<int:project_id>/requests/", views.request_logs, name="request_logs"),
    path(
        "projects/<int:project_id>/requests/send-to-review/",
        views.request_logs_send,
        name="request_logs_send",
    ),
]

project_api_patterns: list[URLPattern] = [
    path("app-keys/", api.ApplicationKeyCollectionApi.as_view(), name="app_key_list"),
    path("app-keys/<int:key_id>/", api.ApplicationKeyDetailApi.as_view(), name="app_key_detail"),
    path(
        "app-keys/<int:key_id>/revoke/",
        api.ApplicationKeyRevokeApi.as_view(),
        name="app_key_revoke",
    ),
    path(
        "fallback-routes/",
        api.FallbackRouteCollectionApi.as_view(),
        name="fallback_route_list",
    ),
    path(
        "fallback-routes/<int:route_id>/",
        api.FallbackRouteDetailApi.as_view(),
        name="fallback_route_detail",
    ),
]

# Mounted at /v1/ by config.urls, outside /api/: OpenAI's paths, answered in OpenAI's shapes
# (plain async Django views, so not in the DRF schema; README "Calling a promoted model").
gateway_patterns: list[URLPattern] = [
    path("models", gateway.models, name="gateway_models"),
    path("chat/completions", gateway.chat_completions, name="gateway_chat_completions"),
]
