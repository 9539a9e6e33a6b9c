from django.urls import path

from datasets import import_views as dataset_import_views
from datasets import quality_views
from datasets import review_views as dataset_review_views
from datasets import views as dataset_views
from evaluation import views as evaluation_views
from registry import views as registry_views
from training import views as training_views

from . import views

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("projects/<int:project_id>/", views.project_detail, name="project_detail"),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/",
        dataset_views.dataset_detail,
        name="dataset_detail",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/import/",
        dataset_views.dataset_import,
        name="dataset_import",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/freeze/",
        dataset_views.dataset_freeze,
        name="dataset_freeze",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/review/",
        dataset_review_views.review_queue,
        name="review_queue",
    ),
    path(
        "projects/<int:project_id>/examples/<int:example_id>/review/",
        dataset_review_views.review_decide,
        name="review_decide",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/",
        dataset_views.version_detail,
        name="version_detail",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/compare/",
        dataset_views.version_compare,
        name="version_compare",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/export/",
        dataset_views.version_export,
        name="version_export",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/train/",
        training_views.job_create,
        name="job_create",
    ),
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/",
        training_views.job_detail,
        name="job_detail",
    ),
    path(
        "projects/<int:project_id>/training-jobs/<int:job_id>/cancel/",
        training_views.job_cancel,
        name="job_cancel",
    ),
    path("projects/<int:project_id>/models/", registry_views.model_list, name="model_list"),
    path(
        "projects/<int:project_id>/model-versions/<int:version_id>/promote/",
        registry_views.version_promote,
        name="version_promote",
    ),
    path(
        "projects/<int:project_id>/models/<int:model_id>/rollback/",
        registry_views.model_rollback,
        name="model_rollback",
    ),
    path(
        "projects/<int:project_id>/model-versions/<int:version_id>/evaluate/",
        evaluation_views.eval_create,
        name="eval_create",
    ),
    path(
        "projects/<int:project_id>/evaluations/<int:run_id>/",
        evaluation_views.eval_detail,
        name="eval_detail",
    ),
    path(
        "projects/<int:project_id>/imports/<int:batch_id>/",
        dataset_import_views.import_detail,
        name="import_detail",
    ),
    path(
        "projects/<int:project_id>/imports/<int:batch_id>/columns/",
        dataset_import_views.import_mapping,
        name="import_mapping",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/quality/",
        quality_views.dataset_quality,
        name="dataset_quality",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/quality/analyze/",
        quality_views.analysis_start,
        name="analysis_start",
    ),
    path(
        "projects/<int:project_id>/analyses/<int:run_id>/",
        quality_views.analysis_status,
        name="analysis_status",
    ),
    path(
        "projects/<int:project_id>/analyses/<int:run_id>/fix-duplicates/",
        quality_views.analysis_fix_duplicates,
        name="analysis_fix_duplicates",
    ),
    path(
        "projects/<int:project_id>/dataset-versions/<int:version_id>/readiness/",
        quality_views.version_readiness,
        name="version_readiness",
    ),
    path(
        "projects/<int:project_id>/examples/<int:example_id>/comments/",
        dataset_review_views.review_comment,
        name="review_comment",
    ),
    path(
        "projects/<int:project_id>/examples/<int:example_id>/answer-diff/",
        dataset_review_views.review_diff,
        name="review_diff",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/review/bulk/",
        dataset_review_views.review_bulk,
        name="review_bulk",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/review/setup/",
        dataset_review_views.review_setup,
        name="review_setup",
    ),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/review/counts/",
        dataset_review_views.review_counts,
        name="review_counts",
    ),
]
