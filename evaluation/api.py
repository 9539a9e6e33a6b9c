"""API for evaluation: run a fine-tuned version against its base, read the side-by-side."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import acting_user
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action
from registry.models import ModelVersion

from .models import Candidate, EvalResult, EvalRun
from .selectors import SideBySideRow, side_by_side
from .services import eval_run_create


def _runs_of(project: Project) -> QuerySet[EvalRun]:
    return (
        EvalRun.objects.filter(project=project)
        .select_related("dataset_version__dataset", "created_by")
        .prefetch_related("candidates__base_model")
        .order_by("-created_at", "-id")
    )


def _run_in(project: Project, run_id: int) -> EvalRun:
    return get_object_or_404(_runs_of(project), pk=run_id)


def _referenced_model_version(project: Project, version_id: int) -> ModelVersion:
    """A body reference is bad input (400 naming the field), not a missing URL (404)."""
    version = (
        ModelVersion.objects.select_related("registered_model", "base_model", "dataset_version")
        .filter(pk=version_id, registered_model__project=project)
        .first()
    )
    if version is None:
        # Same message whether the id exists elsewhere or not, so other projects do not leak.
        raise serializers.ValidationError(
            {"model_version": [f"No model version {version_id} in this project."]}
        )
    return version


def _row_data(row: SideBySideRow, candidates: list[Candidate]) -> dict[str, Any]:
    """One evaluated item with every candidate's answer in candidate order."""
    return {
        "position": row.position,
        "prompt": row.prompt,
        "reference": row.reference,
        "outputs": [
            _candidate_output(candidate, result)
            for candidate, result in zip(candidates, row.results, strict=True)
        ],
    }


def _candidate_output(candidate: Candidate, result: EvalResult | None) -> dict[str, Any]:
    return {
        "candidate": candidate.pk,
        "output": result.output if result else None,
        "exact_match": result.exact_match if result else None,
        "token_f1": result.token_f1 if result else None,
    }


class CandidateOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    # Shadows Field.label only for the type checker; DRF moves declared fields off the class.
    label = serializers.CharField()  # type: ignore[assignment]
    base_model = serializers.CharField(source="base_model.key")
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
    prompting = serializers.CharField()
    exact_match = serializers.FloatField(allow_null=True)
    token_f1 = serializers.FloatField(allow_null=True)
    example_count = serializers.IntegerField()
    generation_seconds = serializers.FloatField(allow_null=True)


class EvalRunOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    dataset_version_number = serializers.IntegerField(source="dataset_version.number")
    dataset_name = serializers.CharField(source="dataset_version.dataset.name")
    split = serializers.CharField()
    max_new_tokens = serializers.IntegerField()
    error = serializers.CharField()
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    candidates = CandidateOutput(many=True)


class EvalRunCollectionApi(APIView):
    class EvalRunCreateInput(serializers.Serializer[Any]):
        model_version = serializers.IntegerField(
            help_text="The fine-tuned version; its base model is evaluated beside it."
        )
        # Bounds are the service's to enforce.
        max_new_tokens = serializers.IntegerField(required=False, default=64)

    @extend_schema(operation_id="evaluations_list", responses=EvalRunOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(EvalRunOutput(_runs_of(project), many=True).data)

    @extend_schema(
        operation_id="evaluations_create",
        summary="Queue an evaluation of a version against its base model on validation data",
        request=EvalRunCreateInput,
        responses={201: EvalRunOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        payload = self.EvalRunCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        run = eval_run_create(
            project=project,
            model_version=_referenced_model_version(
                project, payload.validated_data["model_version"]
            ),
            user=acting_user(request),
            max_new_tokens=payload.validated_data["max_new_tokens"],
        )
        return Response(
            EvalRunOutput(_run_in(project, run.pk)).data, status=status.HTTP_201_CREATED
        )


class CandidateAnswerOutput(serializers.Serializer[Any]):
    """One candidate's answer to one item; all null until the run has scored that candidate."""

    candidate = serializers.IntegerField()
    output = serializers.CharField(allow_null=True)
    exact_match = serializers.BooleanField(allow_null=True)
    token_f1 = serializers.FloatField(allow_null=True)


class SideBySideRowOutput(serializers.Serializer[Any]):
    position = serializers.IntegerField(help_text="The item's position in the dataset version.")
    prompt = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="The conversation without its final assistant message.",
    )
    reference = serializers.CharField(help_text="The final assistant message: the answer key.")
    outputs = CandidateAnswerOutput(many=True)


class EvalRunDetailApi(APIView):
    class EvalRunDetailOutput(EvalRunOutput):
        results = serializers.SerializerMethodField()

        @extend_schema_field(SideBySideRowOutput(many=True))
        def get_results(self, run: EvalRun) -> list[dict[str, Any]]:
            candidates, rows = side_by_side(run)
            shaped = SideBySideRowOutput([_row_data(row, candidates) for row in rows], many=True)
            return list(shaped.data)

    @extend_schema(operation_id="evaluations_retrieve", responses=EvalRunDetailOutput)
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(self.EvalRunDetailOutput(_run_in(project, run_id)).data)
