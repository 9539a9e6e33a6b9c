"""The evaluation app's pages and its API under /api/projects/<project_id>/: evaluation runs,
their results and failures, the advisor, checkpoint sweeps."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, failure_views, views

page_patterns: list[URLPattern] = [
    path(
        "projects/<int:project_id>/model-versions/<int:version_id>/evaluate/",
        views.eval_create,
        name="eval_create",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/",
        views.eval_detail,
        name="eval_detail",
    ),
    path(
        "projects/<int:project_id>/evaluations/",
        views.eval_list,
        name="eval_list",
    ),
    path(
        "projects/<int:project_id>/evaluations/new/",
        views.eval_new,
        name="eval_new",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/rate/",
        views.eval_rate,
        name="eval_rate",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/advice/",
        views.eval_advice,
        name="eval_advice",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/failures/",
        failure_views.eval_failures,
        name="eval_failures",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/results/<int:result_id>/tags/",
        failure_views.eval_result_tag_page,
        name="eval_result_tag",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/send-to-review/",
        failure_views.eval_send_to_review,
        name="eval_send_to_review",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/resume/",
        views.eval_resume,
        name="eval_resume",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/cancel/",
        views.eval_cancel,
        name="eval_cancel",
    ),
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/evaluate-checkpoints/",
        views.checkpoint_sweep,
        name="checkpoint_sweep",
    ),
]

project_api_patterns: list[URLPattern] = [
    path(
        "evaluations/",
        api.EvalRunCollectionApi.as_view(),
        name="evaluation_list",
    ),
    path(
        "evaluations/<int:run_id>/",
        api.EvalRunDetailApi.as_view(),
        name="evaluation_detail",
    ),
    path(
        "evaluations/<int:run_id>/resume/",
        api.EvalRunResumeApi.as_view(),
        name="evaluation_resume",
    ),
    path(
        "evaluations/<int:run_id>/cancel/",
        api.EvalRunCancelApi.as_view(),
        name="evaluation_cancel",
    ),
    path(
        "evaluations/<int:run_id>/results/",
        api.EvalResultListApi.as_view(),
        name="evaluation_results",
    ),
    path(
        "evaluations/<int:run_id>/advice/",
        api.EvalRunAdviceApi.as_view(),
        name="evaluation_advice",
    ),
    path(
        "evaluations/<int:run_id>/results/<int:result_id>/tags/",
        api.EvalResultTagApi.as_view(),
        name="evaluation_result_tag",
    ),
    path(
        "evaluations/<int:run_id>/send-to-review/",
        api.SendToReviewApi.as_view(),
        name="evaluation_send_to_review",
    ),
    path(
        "training-jobs/<int:job_id>/evaluate-checkpoints/",
        api.CheckpointSweepApi.as_view(),
        name="training_job_evaluate_checkpoints",
    ),
]
