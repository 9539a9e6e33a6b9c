"""API for training: the base-model catalog, launching, watching and cancelling jobs, and
searches over training settings (a few trials within a time budget, the best registered).
Registering a checkpoint as a model version is the registry's (registry.api)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import BaseModel
from catalog.selectors import base_model_by_key
from datasets.models import DatasetVersion
from datasets.selectors import dataset_versions_of
from ftportal.api import (
    PAGINATION_PARAMETERS,
    InputSerializer,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotency_key_of
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action

from .estimates import launch_estimate
from .models import Checkpoint, TrainingJob, TrainingSearch
from .recipes import job_hyperparameters, recipe_for
from .searches import (
    DEFAULT_TRIALS,
    MAX_BUDGET_MINUTES,
    MAX_TRIALS,
    MIN_TRIALS,
    SEARCHED_SETTINGS,
    training_search_cancel,
    training_search_launch,
)
from .selectors import (
    TrialRow,
    artifact_name,
    job_overfitting,
    search_spent_minutes,
    search_trial_rows,
    training_job_in_project,
    training_jobs_of,
    training_search_in_project,
    training_searches_of,
)
from .services import training_job_cancel, training_job_launch


class BaseModelListApi(APIView):
    class BaseModelOutput(serializers.Serializer[Any]):
        key = serializers.CharField()
        display_name = serializers.CharField()
        provider = serializers.CharField()
        # By name only: which worker variable holds its key is for admins, never shown.
        endpoint = serializers.CharField(
            source="endpoint.name",
            allow_null=True,
            default=None,
            help_text="Hosted models: the registered endpoint that trains and serves them.",
        )
        parameter_count = serializers.IntegerField(allow_null=True)
        # Shadows Field.source only for the type checker; DRF moves declared fields off the class.
        source = serializers.CharField()  # type: ignore[assignment]
        context_window = serializers.IntegerField(allow_null=True)
        training_usd_per_million_tokens = serializers.DecimalField(
            max_digits=10, decimal_places=4, allow_null=True
        )
        input_usd_per_million_tokens = serializers.DecimalField(
            max_digits=10, decimal_places=4, allow_null=True
        )
        output_usd_per_million_tokens = serializers.DecimalField(
            max_digits=10, decimal_places=4, allow_null=True
        )
        deprecated_at = serializers.DateField(
            allow_null=True, help_text="No new fine-tuning jobs from this day."
        )
        retires_at = serializers.DateField(
            allow_null=True, help_text="Shutdown: the model and its fine-tuned models stop."
        )
        is_active = serializers.BooleanField()

    @extend_schema(
        operation_id="base_models_list",
        summary="The base models a job may start from, and when each retires",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("BaseModelPage", BaseModelOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        # The catalog is global, but it is read in a project so membership still gates it.
        project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=BaseModel.objects.select_related("endpoint").order_by("key"),
            serializer_class=self.BaseModelOutput,
        )


class JobOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    dataset_version_number = serializers.IntegerField(source="dataset_version.number")
    dataset = serializers.IntegerField(source="dataset_version.dataset_id")
    dataset_name = serializers.CharField(source="dataset_version.dataset.name")
    base_model = serializers.CharField(source="base_model.key")
    provider = serializers.CharField()
    hyperparameters = serializers.DictField()
    model_name = serializers.CharField()
    cancel_requested = serializers.BooleanField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    progress_percent = serializers.IntegerField()
    device = serializers.CharField()
    precision = serializers.CharField(
        help_text="A local job's precision of the frozen base weights (fp32 or bf16), the "
        "fastest its worker measured; empty for hosted jobs."
    )
    # Where the adapter lies inside the artifact store, never the server's path to it.
    adapter_dir = serializers.SerializerMethodField()
    error = serializers.CharField()
    provider_job_id = serializers.CharField()
    fine_tuned_model = serializers.CharField()
    attempts = serializers.IntegerField()
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    trained_tokens = serializers.IntegerField()
    tokens_per_second = serializers.FloatField(allow_null=True)
    model_flops_utilization = serializers.FloatField(
        allow_null=True,
        help_text="Model FLOPs of the tokens trained per second of training, over the worker's "
        "measured peak matrix-product rate in the job's precision; null until a local job ends.",
    )
    seconds_left = serializers.SerializerMethodField(
        help_text="The worker's estimate; null when it has none or while the worker is silent."
    )
    worker_silent_seconds = serializers.IntegerField(
        allow_null=True,
        help_text="Seconds since the worker of this started job was last heard from, once that "
        "is longer than its heartbeat (or a hosted job's polling) allows; null while on time.",
    )
    best_step = serializers.IntegerField(allow_null=True)
    val_accuracy = serializers.FloatField(
        allow_null=True,
        help_text="Validation label accuracy at the kept step, when validation measured one.",
    )
    stopped_early = serializers.BooleanField()
    search = serializers.IntegerField(
        source="search_id",
        allow_null=True,
        help_text="The training search this job is a trial of; null for a plain job.",
    )
    estimated_cost_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    actual_cost_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    cost_basis = serializers.CharField()
    model_versions = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_seconds_left(self, job: TrainingJob) -> float | None:
        # An estimate from a worker nobody hears from would mislead, as on the job page.
        return None if job.worker_silent_seconds is not None else job.seconds_left

    def get_adapter_dir(self, job: TrainingJob) -> str:
        return artifact_name(job.adapter_dir)

    def get_model_versions(self, job: TrainingJob) -> list[int]:
        return [version.pk for version in job.model_versions.all()]


class MetricOutput(serializers.Serializer[Any]):
    step = serializers.IntegerField()
    epoch = serializers.FloatField()
    train_loss = serializers.FloatField(allow_null=True)
    val_loss = serializers.FloatField(allow_null=True)
    val_accuracy = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    tokens_per_second = serializers.FloatField(allow_null=True)
    seconds_left = serializers.FloatField(allow_null=True)


class CheckpointOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    step = serializers.IntegerField()
    # Inside the artifact store, as for the job's adapter.
    path = serializers.SerializerMethodField()
    provider_model_id = serializers.CharField()
    train_loss = serializers.FloatField(allow_null=True)
    val_loss = serializers.FloatField(allow_null=True)

    def get_path(self, checkpoint: Checkpoint) -> str:
        return artifact_name(checkpoint.path)


LATEST_EVENTS = 200


class EventOutput(serializers.Serializer[Any]):
    level = serializers.CharField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class JobDetailOutput(JobOutput):
    metrics = MetricOutput(many=True)
    checkpoints = CheckpointOutput(many=True)
    events = serializers.SerializerMethodField()
    overfitting = serializers.SerializerMethodField()

    @extend_schema_field(EventOutput(many=True))
    def get_events(self, job: TrainingJob) -> list[dict[str, Any]]:
        # Hosted providers log an event per step; the latest ones are what a client follows.
        latest = reversed(job.events.order_by("-id")[:LATEST_EVENTS])
        return list(EventOutput(latest, many=True).data)

    def get_overfitting(self, job: TrainingJob) -> str | None:
        signal = job_overfitting(job)
        return signal.message if signal else None


class TrainingJobCollectionApi(APIView):
    class JobCreateInput(InputSerializer):
        dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version.")
        base_model = serializers.CharField(help_text="Catalog key, e.g. smollm2-135m-instruct.")
        # Checked field by field by the service, which owns the bounds.
        hyperparameters = serializers.DictField(required=False, default=dict)
        model_name = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=200
        )

    @extend_schema(
        operation_id="training_jobs_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("JobPage", JobOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=training_jobs_of(project),
            serializer_class=JobOutput,
        )

    @extend_schema(
        operation_id="training_jobs_create",
        summary="Queue a fine-tuning job on a frozen dataset version (once per Idempotency-Key)",
        request=JobCreateInput,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={
            201: JobOutput,
            200: OpenApiResponse(
                JobOutput,
                description="The job an earlier request with this key queued.",
            ),
            409: OpenApiResponse(
                description="This Idempotency-Key was used for a different request."
            ),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        payload = self.JobCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        launch = training_job_launch(
            project=project,
            dataset_version=_referenced_version(project, data["dataset_version"]),
            base_model=_referenced_base_model(data["base_model"]),
            user=acting_user(request),
            idempotency_key=idempotency_key_of(request),
            hyperparameters=data["hyperparameters"],
            model_name=data["model_name"],
        )
        return Response(
            JobOutput(training_job_in_project(project, launch.obj.pk)).data,
            status=status.HTTP_201_CREATED if launch.created else status.HTTP_200_OK,
        )


def _referenced_version(project: Project, version_id: int) -> DatasetVersion:
    """A body reference is bad input (400 naming the field), not a missing URL (404)."""
    version = dataset_versions_of(project).filter(pk=version_id).first()
    if version is None:
        # Same message whether the id exists elsewhere or not, so other projects do not leak.
        raise serializers.ValidationError(
            {"dataset_version": [f"No dataset version {version_id} in this project."]}
        )
    return version


def _referenced_base_model(key: str) -> BaseModel:
    base_model = base_model_by_key(key)
    if base_model is None:
        raise serializers.ValidationError(
            {"base_model": [f"No base model '{key}' in the catalog."]}
        )
    return base_model


class TrainingJobDetailApi(APIView):
    @extend_schema(operation_id="training_jobs_retrieve", responses=JobDetailOutput)
    def get(self, request: Request, project_id: int, job_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(JobDetailOutput(training_job_in_project(project, job_id)).data)


class TrainingJobCancelApi(APIView):
    @extend_schema(
        operation_id="training_jobs_cancel",
        summary="Cancel a queued job, or ask a running one to stop",
        request=None,
        responses=JobOutput,
    )
    def post(self, request: Request, project_id: int, job_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        job = training_job_in_project(project, job_id)
        refuse_any_input(request)
        job = training_job_cancel(job=job)
        return Response(JobOutput(training_job_in_project(project, job.pk)).data)


class TrainingJobEstimateApi(APIView):
    @extend_schema(
        operation_id="training_jobs_estimate",
        summary="Before launch: training tokens, cost, local time and the guide's warnings",
        request=TrainingJobCollectionApi.JobCreateInput,
        responses=dict[str, Any],
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        payload = TrainingJobCollectionApi.JobCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        base_model = _referenced_base_model(data["base_model"])
        version = _referenced_version(project, data["dataset_version"])
        estimate = launch_estimate(
            version=version,
            base_model=base_model,
            hyperparameters=job_hyperparameters(version, base_model, data["hyperparameters"]),
        )
        # Which defaults the job would start from, and why (what the launch page says).
        recipe = recipe_for(version, base_model)
        return Response(estimate.as_dict() | {"recipe": asdict(recipe)})


# --- searches ------------------------------------------------------------------------------------


class TrialOutput(serializers.Serializer[Any]):
    number = serializers.IntegerField()
    changes = serializers.CharField(help_text="What this trial changes of the shared settings.")
    learning_rate = serializers.FloatField()
    lora_r = serializers.IntegerField()
    job = serializers.SerializerMethodField(help_text="The trial's job; null until it starts.")
    status = serializers.SerializerMethodField(
        help_text="The job's status, or 'planned' until it starts."
    )
    val_accuracy = serializers.FloatField(allow_null=True)
    val_loss = serializers.FloatField(allow_null=True)
    best_step = serializers.SerializerMethodField()
    stopped_early = serializers.SerializerMethodField()
    minutes = serializers.FloatField(allow_null=True, help_text="Worker minutes it took so far.")
    is_best = serializers.BooleanField()

    def get_job(self, row: TrialRow) -> int | None:
        return row.job.pk if row.job is not None else None

    def get_status(self, row: TrialRow) -> str:
        return str(row.job.status) if row.job is not None else "planned"

    def get_best_step(self, row: TrialRow) -> int | None:
        return row.job.best_step if row.job is not None else None

    def get_stopped_early(self, row: TrialRow) -> bool:
        return row.job is not None and row.job.stopped_early


class SearchOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    dataset_version_number = serializers.IntegerField(source="dataset_version.number")
    dataset = serializers.IntegerField(source="dataset_version.dataset_id")
    dataset_name = serializers.CharField(source="dataset_version.dataset.name")
    base_model = serializers.CharField(source="base_model.key")
    model_name = serializers.CharField()
    budget_minutes = serializers.IntegerField()
    hyperparameters = serializers.DictField(help_text="The settings every trial shares.")
    trial_settings = serializers.ListField(
        child=serializers.DictField(), help_text="What each trial changes, in order."
    )
    cancel_requested = serializers.BooleanField()
    best_job = serializers.IntegerField(
        source="best_job_id",
        allow_null=True,
        help_text="The trial registered as the search's result, once the search has ended.",
    )
    best_model_versions = serializers.SerializerMethodField()
    outcome = serializers.CharField(help_text="Why the search ended where it did.")
    spent_minutes = serializers.SerializerMethodField(
        help_text="Worker minutes the trials took, of the budget."
    )
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    trials = serializers.SerializerMethodField(help_text="Every planned trial, started or not.")

    def get_best_model_versions(self, search: TrainingSearch) -> list[int]:
        if search.best_job is None:
            return []
        return [version.pk for version in search.best_job.model_versions.all()]

    def get_spent_minutes(self, search: TrainingSearch) -> float:
        return search_spent_minutes(search)

    @extend_schema_field(TrialOutput(many=True))
    def get_trials(self, search: TrainingSearch) -> list[dict[str, Any]]:
        return list(TrialOutput(search_trial_rows(search), many=True).data)


class TrainingSearchCollectionApi(APIView):
    class SearchCreateInput(InputSerializer):
        dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version.")
        base_model = serializers.CharField(help_text="Catalog key of a local base model.")
        budget_minutes = serializers.IntegerField(
            min_value=1,
            max_value=MAX_BUDGET_MINUTES,
            help_text="Worker minutes all trials may take; a trial starts only if its "
            "estimate fits in what is left.",
        )
        trial_count = serializers.IntegerField(
            required=False,
            default=DEFAULT_TRIALS,
            min_value=MIN_TRIALS,
            max_value=MAX_TRIALS,
            help_text="How many trials the search plans itself, when `trials` is not given.",
        )
        # Checked by the service, which owns the searched settings and their bounds.
        trials = serializers.ListField(
            child=serializers.DictField(),
            required=False,
            help_text="What each trial changes, in order (only "
            f"{', '.join(SEARCHED_SETTINGS)}); the first usually nothing ({{}}).",
        )
        hyperparameters = serializers.DictField(
            required=False, default=dict, help_text="Settings every trial shares."
        )
        model_name = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=200
        )

    @extend_schema(
        operation_id="training_searches_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("SearchPage", SearchOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=training_searches_of(project),
            serializer_class=SearchOutput,
        )

    @extend_schema(
        operation_id="training_searches_create",
        summary="Start a search over a few training settings within a time budget (once per "
        "Idempotency-Key)",
        request=SearchCreateInput,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={
            201: SearchOutput,
            200: OpenApiResponse(
                SearchOutput,
                description="The search an earlier request with this key started.",
            ),
            409: OpenApiResponse(
                description="This Idempotency-Key was used for a different request."
            ),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        payload = self.SearchCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        launch = training_search_launch(
            project=project,
            dataset_version=_referenced_version(project, data["dataset_version"]),
            base_model=_referenced_base_model(data["base_model"]),
            user=acting_user(request),
            idempotency_key=idempotency_key_of(request),
            budget_minutes=data["budget_minutes"],
            trial_count=data["trial_count"],
            trials=data.get("trials"),
            hyperparameters=data["hyperparameters"],
            model_name=data["model_name"],
        )
        return Response(
            SearchOutput(training_search_in_project(project, launch.obj.pk)).data,
            status=status.HTTP_201_CREATED if launch.created else status.HTTP_200_OK,
        )


class TrainingSearchDetailApi(APIView):
    @extend_schema(operation_id="training_searches_retrieve", responses=SearchOutput)
    def get(self, request: Request, project_id: int, search_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(SearchOutput(training_search_in_project(project, search_id)).data)


class TrainingSearchCancelApi(APIView):
    @extend_schema(
        operation_id="training_searches_cancel",
        summary="Start no more trials and cancel the one running; the best finished trial is "
        "still registered",
        request=None,
        responses=SearchOutput,
    )
    def post(self, request: Request, project_id: int, search_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        search = training_search_in_project(project, search_id)
        refuse_any_input(request)
        search = training_search_cancel(search=search)
        return Response(SearchOutput(training_search_in_project(project, search.pk)).data)
