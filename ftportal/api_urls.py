"""The JSON API, mounted at /api/. Everything about a project lives under its id."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from catalog import api as catalog_api
from datasets import api as datasets_api
from evaluation import api as evaluation_api
from registry import api as registry_api
from training import api as training_api

from . import api as projects_api
from . import auth_api

dataset_patterns = [
    path("datasets/", datasets_api.DatasetCollectionApi.as_view(), name="dataset_list"),
    path(
        "datasets/<int:dataset_id>/",
        datasets_api.DatasetDetailApi.as_view(),
        name="dataset_detail",
    ),
    path(
        "datasets/<int:dataset_id>/imports/",
        datasets_api.ImportApi.as_view(),
        name="dataset_import",
    ),
    path(
        "datasets/<int:dataset_id>/examples/",
        datasets_api.ExampleListApi.as_view(),
        name="example_list",
    ),
    path(
        "datasets/<int:dataset_id>/contract/",
        datasets_api.DatasetContractApi.as_view(),
        name="dataset_contract",
    ),
    path(
        "datasets/<int:dataset_id>/contract/derived-labels/",
        datasets_api.DerivedLabelsApi.as_view(),
        name="dataset_contract_derived_labels",
    ),
    path(
        "datasets/<int:dataset_id>/versions/",
        datasets_api.DatasetVersionCollectionApi.as_view(),
        name="dataset_version_list",
    ),
    path(
        "examples/<int:example_id>/",
        datasets_api.ExampleDetailApi.as_view(),
        name="example_detail",
    ),
    path(
        "examples/<int:example_id>/review/",
        datasets_api.ExampleReviewApi.as_view(),
        name="example_review",
    ),
    path(
        "examples/<int:example_id>/move-to-training/",
        datasets_api.MoveToTrainingApi.as_view(),
        name="example_move_to_training",
    ),
    path(
        "dataset-versions/<int:version_id>/",
        datasets_api.DatasetVersionDetailApi.as_view(),
        name="dataset_version_detail",
    ),
    path(
        "dataset-versions/<int:version_id>/diff/",
        datasets_api.VersionDiffApi.as_view(),
        name="dataset_version_diff",
    ),
    path(
        "dataset-versions/<int:version_id>/export/",
        datasets_api.DatasetVersionExportApi.as_view(),
        name="dataset_version_export",
    ),
    path(
        "imports/<int:batch_id>/",
        datasets_api.ImportDetailApi.as_view(),
        name="import_detail",
    ),
]

# Quality analysis and readiness (issue 3).
from datasets.quality import api as quality_api  # noqa: E402

dataset_patterns += [
    path(
        "datasets/<int:dataset_id>/analyses/",
        quality_api.AnalysisCollectionApi.as_view(),
        name="analysis_list",
    ),
    path("analyses/<int:run_id>/", quality_api.AnalysisDetailApi.as_view(), name="analysis_detail"),
    path(
        "analyses/<int:run_id>/findings/",
        quality_api.FindingListApi.as_view(),
        name="analysis_findings",
    ),
    path(
        "analyses/<int:run_id>/fix-exact-duplicates/",
        quality_api.DuplicateFixApi.as_view(),
        name="analysis_fix_duplicates",
    ),
    path(
        "dataset-versions/<int:version_id>/readiness/",
        quality_api.VersionReadinessApi.as_view(),
        name="dataset_version_readiness",
    ),
]

# Provider endpoints admins registered (read-only; members pick one for candidates and judges).
catalog_patterns = [
    path("endpoints/", catalog_api.EndpointListApi.as_view(), name="endpoint_list"),
]

training_patterns = [
    path("base-models/", training_api.BaseModelListApi.as_view(), name="base_model_list"),
    path(
        "training-jobs/",
        training_api.TrainingJobCollectionApi.as_view(),
        name="training_job_list",
    ),
    path(
        "training-jobs/estimate/",
        training_api.TrainingJobEstimateApi.as_view(),
        name="training_job_estimate",
    ),
    path(
        "training-jobs/<int:job_id>/checkpoints/<int:step>/register/",
        registry_api.CheckpointRegisterApi.as_view(),
        name="training_checkpoint_register",
    ),
    path(
        "training-jobs/<int:job_id>/",
        training_api.TrainingJobDetailApi.as_view(),
        name="training_job_detail",
    ),
    path(
        "training-jobs/<int:job_id>/cancel/",
        training_api.TrainingJobCancelApi.as_view(),
        name="training_job_cancel",
    ),
]

registry_patterns = [
    path("models/", registry_api.RegisteredModelListApi.as_view(), name="model_list"),
    path(
        "models/<int:model_id>/",
        registry_api.RegisteredModelDetailApi.as_view(),
        name="model_detail",
    ),
    path(
        "models/<int:model_id>/rollback/",
        registry_api.RegisteredModelRollbackApi.as_view(),
        name="model_rollback",
    ),
    path(
        "models/<int:model_id>/history/",
        registry_api.AliasHistoryApi.as_view(),
        name="model_alias_history",
    ),
    path(
        "model-versions/<int:version_id>/",
        registry_api.ModelVersionDetailApi.as_view(),
        name="model_version_detail",
    ),
    path(
        "model-versions/<int:version_id>/promote/",
        registry_api.ModelVersionPromoteApi.as_view(),
        name="model_version_promote",
    ),
]

evaluation_patterns = [
    path(
        "evaluations/",
        evaluation_api.EvalRunCollectionApi.as_view(),
        name="evaluation_list",
    ),
    path(
        "evaluations/<int:run_id>/",
        evaluation_api.EvalRunDetailApi.as_view(),
        name="evaluation_detail",
    ),
    path(
        "evaluations/<int:run_id>/resume/",
        evaluation_api.EvalRunResumeApi.as_view(),
        name="evaluation_resume",
    ),
    path(
        "evaluations/<int:run_id>/cancel/",
        evaluation_api.EvalRunCancelApi.as_view(),
        name="evaluation_cancel",
    ),
    path(
        "evaluations/<int:run_id>/results/",
        evaluation_api.EvalResultListApi.as_view(),
        name="evaluation_results",
    ),
    path(
        "evaluations/<int:run_id>/results/<int:result_id>/tags/",
        evaluation_api.EvalResultTagApi.as_view(),
        name="evaluation_result_tag",
    ),
    path(
        "evaluations/<int:run_id>/send-to-review/",
        evaluation_api.SendToReviewApi.as_view(),
        name="evaluation_send_to_review",
    ),
    path(
        "training-jobs/<int:job_id>/evaluate-checkpoints/",
        evaluation_api.CheckpointSweepApi.as_view(),
        name="training_job_evaluate_checkpoints",
    ),
]

member_patterns = [
    path("members/", projects_api.MemberCollectionApi.as_view(), name="member_list"),
    path("members/audit/", projects_api.AuditLogApi.as_view(), name="member_audit_log"),
    path("members/<int:user_id>/", projects_api.MemberDetailApi.as_view(), name="member_detail"),
]

project_patterns = [
    path("", projects_api.ProjectDetailApi.as_view(), name="project_detail"),
    *member_patterns,
    *dataset_patterns,
    *catalog_patterns,
    *training_patterns,
    *registry_patterns,
    *evaluation_patterns,
]

# Names are namespaced ("api:...") so they never clash with the page views' names.
app_name = "api"

urlpatterns: list[URLPattern | URLResolver] = [
    path("auth/token/", auth_api.AuthTokenApi.as_view(), name="auth_token"),
    path("projects/", projects_api.ProjectListApi.as_view(), name="project_list"),
    path("projects/<int:project_id>/", include(project_patterns)),
]

# The review workflow (issue 3): queue, bulk actions, settings, agreement, comments, votes.
review_patterns = [
    path(
        "datasets/<int:dataset_id>/review-queue/",
        datasets_api.ReviewQueueApi.as_view(),
        name="review_queue",
    ),
    path(
        "datasets/<int:dataset_id>/review-bulk/",
        datasets_api.ReviewBulkApi.as_view(),
        name="review_bulk",
    ),
    path(
        "datasets/<int:dataset_id>/review-settings/",
        datasets_api.ReviewSettingsApi.as_view(),
        name="review_settings",
    ),
    path(
        "datasets/<int:dataset_id>/agreement/",
        datasets_api.AgreementApi.as_view(),
        name="review_agreement",
    ),
    path(
        "examples/<int:example_id>/comments/",
        datasets_api.ExampleCommentsApi.as_view(),
        name="example_comments",
    ),
    path(
        "examples/<int:example_id>/votes/",
        datasets_api.ExampleVotesApi.as_view(),
        name="example_votes",
    ),
]
urlpatterns += [path("projects/<int:project_id>/", include(review_patterns))]
