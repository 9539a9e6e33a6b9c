"""Serving's pages (application keys, fallback routes, the request log browser), its API under
/api/projects/<project_id>/ (application keys, fallback routes), and the OpenAI-compatible
gateway under /v1/ (``gateway_patterns``)."""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from . import api, gateway, outcomes, views
from .gateway_routes import allow_methods, not_found

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
    path("projects/<int:project_id>/experiments/", views.experiments, name="experiments"),
    path(
        "projects/<int:project_id>/experiments/<int:experiment_id>/",
        views.experiment_detail,
        name="experiment_page",
    ),
    path(
        "projects/<int:project_id>/experiments/<int:experiment_id>/<str:action>/",
        views.experiment_act,
        name="experiment_act",
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
    path("experiments/", api.ExperimentCollectionApi.as_view(), name="experiment_list"),
    path(
        "experiments/<int:experiment_id>/",
        api.ExperimentDetailApi.as_view(),
        name="experiment_detail",
    ),
    path(
        "experiments/<int:experiment_id>/start/",
        api.ExperimentStartApi.as_view(),
        name="experiment_start",
    ),
    path(
        "experiments/<int:experiment_id>/stop/",
        api.ExperimentStopApi.as_view(),
        name="experiment_stop",
    ),
    path(
        "experiments/<int:experiment_id>/conclude/",
        api.ExperimentConcludeApi.as_view(),
        name="experiment_conclude",
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
# Each path takes its methods only (405 in OpenAI's shape), and any other path is OpenAI's 404.
gateway_patterns: list[URLPattern] = [
    path("models", allow_methods(gateway.models, "GET"), name="gateway_models"),
    path("feedback", allow_methods(outcomes.feedback, "POST"), name="gateway_feedback"),
    path("events", allow_methods(outcomes.events, "POST"), name="gateway_events"),
    re_path(r"^(?P<path>.*)$", not_found, name="gateway_not_found"),
]
