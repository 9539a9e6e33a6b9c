"""API for training: the base-model catalog, launching, watching and cancelling jobs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.models import DatasetVersion
from ftportal.api import acting_user
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action

from .models import BaseModel, TrainingJob
from .services import training_job_cancel, training_job_create


def _job_in(project: Project, job_id: int) -> TrainingJob:
    jobs = TrainingJob.objects.select_related(
        "dataset_version__dataset", "base_model", "created_by", "model_version"
    )
    return get_object_or_404(jobs, pk=job_id, project=project)


def _jobs_of(project: Project) -> QuerySet[TrainingJob]:
    return (
        TrainingJob.objects.filter(project=project)
        .select_related("dataset_version__dataset", "base_model", "created_by", "model_version")
        .order_by("-created_at", "-id")
    )


class BaseModelListApi(APIView):
    class BaseModelOutput(serializers.Serializer[Any]):
        key = serializers.CharField()
        display_name = serializers.CharField()
        provider = serializers.CharField()
        parameter_count = serializers.IntegerField(allow_null=True)
        # Shadows Field.source only for the type checker; DRF moves declared fields off the class.
        source = serializers.CharField()  # type: ignore[assignment]
        retires_at = serializers.DateField(allow_null=True)
        is_active = serializers.BooleanField()

    @extend_schema(
        operation_id="base_models_list",
        summary="The base models a job may start from, and when each retires",
        responses=BaseModelOutput(many=True),
    )
    def get(self, request: Request, project_id: int) -> Response:
        # The catalog is global, but it is read in a project so membership still gates it.
        project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(self.BaseModelOutput(BaseModel.objects.all(), many=True).data)


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
    adapter_dir = serializers.CharField()
    error = serializers.CharField()
    model_version = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_model_version(self, job: TrainingJob) -> int | None:
        # The reverse one-to-one raises rather than returning None before registration.
        version = getattr(job, "model_version", None)
        return version.pk if version is not None else None


class MetricOutput(serializers.Serializer[Any]):
    step = serializers.IntegerField()
    epoch = serializers.FloatField()
    train_loss = serializers.FloatField(allow_null=True)
    val_loss = serializers.FloatField(allow_null=True)


class JobDetailOutput(JobOutput):
    metrics = MetricOutput(many=True)


class TrainingJobCollectionApi(APIView):
    class JobCreateInput(serializers.Serializer[Any]):
        dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version.")
        base_model = serializers.CharField(help_text="Catalog key, e.g. smollm2-135m-instruct.")
        # Checked field by field by the service, which owns the bounds.
        hyperparameters = serializers.DictField(required=False, default=dict)
        model_name = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=200
        )

    @extend_schema(operation_id="training_jobs_list", responses=JobOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(JobOutput(_jobs_of(project), many=True).data)

    @extend_schema(
        operation_id="training_jobs_create",
        summary="Queue a fine-tuning job on a frozen dataset version",
        request=JobCreateInput,
        responses={201: JobOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        payload = self.JobCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        job = training_job_create(
            project=project,
            dataset_version=_referenced_version(project, data["dataset_version"]),
            base_model=_referenced_base_model(data["base_model"]),
            user=acting_user(request),
            hyperparameters=data["hyperparameters"],
            model_name=data["model_name"],
        )
        return Response(JobOutput(_job_in(project, job.pk)).data, status=status.HTTP_201_CREATED)


def _referenced_version(project: Project, version_id: int) -> DatasetVersion:
    """A body reference is bad input (400 naming the field), not a missing URL (404)."""
    version = (
        DatasetVersion.objects.select_related("dataset")
        .filter(pk=version_id, dataset__project=project)
        .first()
    )
    if version is None:
        # Same message whether the id exists elsewhere or not, so other projects do not leak.
        raise serializers.ValidationError(
            {"dataset_version": [f"No dataset version {version_id} in this project."]}
        )
    return version


def _referenced_base_model(key: str) -> BaseModel:
    base_model = BaseModel.objects.filter(key=key).first()
    if base_model is None:
        raise serializers.ValidationError(
            {"base_model": [f"No base model '{key}' in the catalog."]}
        )
    return base_model


class TrainingJobDetailApi(APIView):
    @extend_schema(operation_id="training_jobs_retrieve", responses=JobDetailOutput)
    def get(self, request: Request, project_id: int, job_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(JobDetailOutput(_job_in(project, job_id)).data)


class TrainingJobCancelApi(APIView):
    @extend_schema(
        operation_id="training_jobs_cancel",
        summary="Cancel a queued job, or ask a running one to stop",
        request=None,
        responses=JobOutput,
    )
    def post(self, request: Request, project_id: int, job_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        job = training_job_cancel(job=_job_in(project, job_id))
        return Response(JobOutput(_job_in(project, job.pk)).data)
