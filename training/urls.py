"""The training app's pages and its API under /api/projects/<project_id>/: base models,
training jobs, their estimates and checkpoints, searches over training settings."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, views

page_patterns: list[URLPattern] = [
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/train/",
        views.job_create,
        name="job_create",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/launch/",
        views.job_launch,
        name="job_launch",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/launch/estimate/",
        views.job_estimate,
        name="job_estimate",
    ),
    path(
        "projects/<int:project_id>/base-models/",
        views.base_model_catalog,
        name="base_model_catalog",
    ),
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/",
        views.job_detail,
        name="job_detail",
    ),
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/cancel/",
        views.job_cancel,
        name="job_cancel",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/search/",
        views.search_create,
        name="search_create",
    ),
    path(
        "projects/<int:project_id>/training-searches/<int:search_id>/",
        views.search_detail,
        name="search_detail",
    ),
    path(
        "projects/<int:project_id>/training-searches/<int:search_id>/cancel/",
        views.search_cancel,
        name="search_cancel",
    ),
]

project_api_patterns: list[URLPattern] = [
    path("base-models/", api.BaseModelListApi.as_view(), name="base_model_list"),
    path(
        "training-jobs/",
        api.TrainingJobCollectionApi.as_view(),
        name="training_job_list",
    ),
    path(
        "training-jobs/estimate/",
        api.TrainingJobEstimateApi.as_view(),
        name="training_job_estimate",
    ),
    path(
        "training-jobs/<int:job_id>/",
        api.TrainingJobDetailApi.as_view(),
        name="training_job_detail",
    ),
    path(
        "training-jobs/<int:job_id>/cancel/",
        api.TrainingJobCancelApi.as_view(),
        name="training_job_cancel",
    ),
    path(
        "training-searches/",
        api.TrainingSearchCollectionApi.as_view(),
        name="training_search_list",
    ),
    path(
        "training-searches/<int:search_id>/",
        api.TrainingSearchDetailApi.as_view(),
        name="training_search_detail",
    ),
    path(
        "training-searches/<int:search_id>/cancel/",
        api.TrainingSearchCancelApi.as_view(),
        name="training_search_cancel",
    ),
]
