"""The registry's pages and its API under /api/projects/<project_id>/: registered models,
their versions, registering a training job's checkpoint, promotion and rollback."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, views

page_patterns: list[URLPattern] = [
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/checkpoints/<int:checkpoint_id>/register/",
        views.checkpoint_register,
        name="checkpoint_register",
    ),
    path("projects/<int:project_id>/models/", views.model_list, name="model_list"),
    # A version's page: /models/<id>/ names a model version (its lineage, scores and history).
    path(
        "projects/<int:project_id>/models/<int:version_id>/",
        views.model_version_detail,
        name="model_version_detail",
    ),
    path(
        "projects/<int:project_id>/model-versions/<int:version_id>/promote/",
        views.version_promote,
        name="version_promote",
    ),
    path(
        "projects/<int:project_id>/models/<int:model_id>/rollback/",
        views.model_rollback,
        name="model_rollback",
    ),
]

project_api_patterns: list[URLPattern] = [
    path(
        "training-jobs/<int:job_id>/checkpoints/<int:step>/register/",
        api.CheckpointRegisterApi.as_view(),
        name="training_checkpoint_register",
    ),
    path("models/", api.RegisteredModelListApi.as_view(), name="model_list"),
    path(
        "models/<int:model_id>/",
        api.RegisteredModelDetailApi.as_view(),
        name="model_detail",
    ),
    path(
        "models/<int:model_id>/rollback/",
        api.RegisteredModelRollbackApi.as_view(),
        name="model_rollback",
    ),
    path(
        "models/<int:model_id>/history/",
        api.AliasHistoryApi.as_view(),
        name="model_alias_history",
    ),
    path(
        "model-versions/<int:version_id>/",
        api.ModelVersionDetailApi.as_view(),
        name="model_version_detail",
    ),
    path(
        "model-versions/<int:version_id>/promote/",
        api.ModelVersionPromoteApi.as_view(),
        name="model_version_promote",
    ),
]
