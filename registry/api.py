"""API for the registry: model versions with lineage, promotion, rollback and alias history, and
registering one of a training job's checkpoints as a model version."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import (
    PAGINATION_PARAMETERS,
    InputSerializer,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.permissions import project_for
from ftportal.roles import Action
from training.selectors import checkpoints_of

from .gate import evaluation_reader
from .models import AliasChange, ModelVersion, RegisteredModel
from .selectors import (
    alias_changes_of,
    artifact_name,
    model_version_in_project,
    prefetched_production,
    registered_model_in_project,
    registered_models_of,
)
from .services import (
    MAX_MARGIN_POINTS,
    model_version_promote,
    model_version_register_checkpoint,
    production_rollback,
)


def _history_of(registered_model: RegisteredModel) -> QuerySet[AliasChange]:
    return registered_model.alias_changes.select_related(
        "from_version", "to_version", "changed_by"
    ).order_by("-id")


class VersionRefOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    number = serializers.IntegerField()


class DatasetLineageOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="dataset_version_id")
    number = serializers.IntegerField(source="dataset_version.number")
    dataset = serializers.IntegerField(source="dataset_version.dataset_id")
    dataset_name = serializers.CharField(source="dataset_version.dataset.name")
    # The hash recorded when the version was registered, the one the model was trained on.
    content_hash = serializers.CharField(source="dataset_hash")


class ModelVersionOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    training_job = serializers.IntegerField(source="training_job_id")
    dataset_version = DatasetLineageOutput(source="*")
    base_model = serializers.CharField(source="base_model.key")
    hyperparameters = serializers.DictField()
    # The adapter's name inside the artifact store (or the hosted model id), never a server path.
    adapter_dir = serializers.SerializerMethodField()
    checkpoint_step = serializers.IntegerField(source="checkpoint.step", allow_null=True)
    final_train_loss = serializers.FloatField(allow_null=True)
    final_val_loss = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_adapter_dir(self, version: ModelVersion) -> str:
        return artifact_name(version)


class RegisteredModelOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    production_version = serializers.SerializerMethodField()
    versions = ModelVersionOutput(many=True)

    @extend_schema_field(VersionRefOutput(allow_null=True))
    def get_production_version(self, registered_model: RegisteredModel) -> dict[str, int] | None:
        version = prefetched_production(registered_model)
        if version is None:
            return None
        return {"id": version.pk, "number": version.number}


class AliasChangeOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    registered_model = serializers.IntegerField(source="registered_model_id")
    alias = serializers.CharField()
    kind = serializers.CharField()
    from_version = VersionRefOutput(allow_null=True)
    to_version = VersionRefOutput()
    changed_by = serializers.CharField(source="changed_by.get_username")
    reason = serializers.CharField()
    # What the promotion gate saw (empty for rollbacks) and whether an admin overrode it.
    evidence = serializers.DictField()
    overridden = serializers.BooleanField()
    created_at = serializers.DateTimeField()


# The string a client sends when it saw no production version at all.
NO_VERSION = "none"


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "enum": [NO_VERSION]},
        ]
    }
)
class SeenVersionField(serializers.Field[int | None, Any, Any, Any]):
    """A version number the client saw, or "none" when it saw the alias unset."""

    default_error_messages = {
        "invalid": f'Give a version number (e.g. 3) or "{NO_VERSION}".',
    }

    def to_internal_value(self, data: Any) -> int | None:
        if data == NO_VERSION:
            return None
        if isinstance(data, str) and data.isdigit():
            data = int(data)  # a form-encoded body carries every value as text
        if isinstance(data, bool) or not isinstance(data, int) or data < 1:
            self.fail("invalid")
        return int(data)

    def to_representation(self, value: int | None) -> Any:
        return NO_VERSION if value is None else value


class ReasonInput(InputSerializer):
    reason = serializers.CharField(
        help_text="Why: kept in the alias history with who and when.", max_length=2000
    )
    expected_current_version = SeenVersionField(
        help_text='The number of the version production served when you decided ("none" if '
        "it served nothing). If production has moved since, nothing changes and the answer is "
        "409: a second click or a second person cannot move production twice.",
    )


class RegisteredModelListApi(APIView):
    @extend_schema(
        operation_id="models_list",
        summary="Registered models, each version's lineage, and what production serves",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("RegisteredModelPage", RegisteredModelOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=registered_models_of(project).order_by("name", "id"),
            serializer_class=RegisteredModelOutput,
        )


class RegisteredModelDetailApi(APIView):
    @extend_schema(operation_id="models_retrieve", responses=RegisteredModelOutput)
    def get(self, request: Request, project_id: int, model_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(RegisteredModelOutput(registered_model_in_project(project, model_id)).data)


class VersionEvaluationOutput(serializers.Serializer[Any]):
    eval_run = serializers.IntegerField(source="eval_run_id")
    finished_at = serializers.DateTimeField(allow_null=True)
    dataset_version = serializers.CharField()
    metric = serializers.CharField(source="metric_label")
    value = serializers.FloatField(allow_null=True)
    candidates = serializers.IntegerField()


class ModelVersionDetailOutput(ModelVersionOutput):
    registered_model = serializers.IntegerField(source="registered_model_id")
    training_cost_usd = serializers.DecimalField(
        source="training_job.actual_cost_usd", max_digits=12, decimal_places=4, allow_null=True
    )
    evaluations = serializers.SerializerMethodField()
    alias_history = serializers.SerializerMethodField()

    @extend_schema_field(VersionEvaluationOutput(many=True))
    def get_evaluations(self, version: ModelVersion) -> Any:
        return VersionEvaluationOutput(evaluation_reader().evaluations_of(version), many=True).data

    @extend_schema_field(AliasChangeOutput(many=True))
    def get_alias_history(self, version: ModelVersion) -> Any:
        return AliasChangeOutput(alias_changes_of(version), many=True).data


class ModelVersionDetailApi(APIView):
    @extend_schema(
        operation_id="model_versions_retrieve",
        summary="One version: its lineage, the evaluations it took part in, its alias history",
        responses=ModelVersionDetailOutput,
    )
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        version = model_version_in_project(project, version_id)
        return Response(ModelVersionDetailOutput(version).data)


class ModelVersionPromoteApi(APIView):
    class PromoteInput(ReasonInput):
        margin = serializers.FloatField(
            required=False,
            default=0.0,
            min_value=0.0,
            max_value=MAX_MARGIN_POINTS,
            help_text="Points of the task metric the candidate may fall short of production by "
            "(the worse end of the paired interval must stay at or above minus this).",
        )
        override = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Admins only: promote although the evaluation does not allow it.",
        )

    @extend_schema(
        operation_id="model_versions_promote",
        summary="Point the production alias at this version, if a finished evaluation shows it "
        "better than production or no worse than the margin (409 with the evidence otherwise, "
        "or when production is no longer expected_current_version)",
        request=PromoteInput,
        responses={
            200: AliasChangeOutput,
            409: OpenApiResponse(description="Refused; the error says why and which field."),
        },
    )
    def post(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
        version = model_version_in_project(project, version_id)
        payload = self.PromoteInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        change = model_version_promote(
            model_version=version,
            user=acting_user(request),
            reason=data["reason"],
            expected_current_version=data["expected_current_version"],
            margin_points=data["margin"],
            override=data["override"],
        )
        return Response(AliasChangeOutput(change).data)


class RegisteredModelRollbackApi(APIView):
    class RollbackInput(ReasonInput):
        target_version = serializers.IntegerField(
            min_value=1,
            help_text="The number of the version you are rolling back to (the one production "
            "served before the current one); 409 if a rollback would now go elsewhere.",
        )

    @extend_schema(
        operation_id="models_rollback",
        summary="Move production back to the version it served before the current one (409 "
        "when production is no longer expected_current_version or the target has changed)",
        request=RollbackInput,
        responses={
            200: AliasChangeOutput,
            409: OpenApiResponse(description="Refused; the error says why and which field."),
        },
    )
    def post(self, request: Request, project_id: int, model_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.PROMOTE)
        registered_model = registered_model_in_project(project, model_id)
        payload = self.RollbackInput(data=request.data)
        payload.is_valid(raise_exception=True)
        change = production_rollback(
            registered_model=registered_model, user=acting_user(request), **payload.validated_data
        )
        return Response(AliasChangeOutput(change).data)


class AliasHistoryApi(APIView):
    @extend_schema(
        operation_id="models_alias_history",
        summary="Every alias change of this model, newest first, with who and why",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("AliasChangePage", AliasChangeOutput),
    )
    def get(self, request: Request, project_id: int, model_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        registered_model = registered_model_in_project(project, model_id)
        return paginated_response(
            request=request,
            view=self,
            queryset=_history_of(registered_model),
            serializer_class=AliasChangeOutput,
        )


class CheckpointRegisterApi(APIView):
    @extend_schema(
        operation_id="training_checkpoints_register",
        summary="Register one of a job's checkpoints as a model version",
        request=None,
        responses={201: dict[str, Any]},
    )
    def post(self, request: Request, project_id: int, job_id: int, step: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.TRAIN)
        checkpoint = get_object_or_404(checkpoints_of(project), job_id=job_id, step=step)
        refuse_any_input(request)
        version = model_version_register_checkpoint(checkpoint=checkpoint)
        return Response(
            {"model_version": version.pk, "number": version.number, "step": checkpoint.step},
            status=status.HTTP_201_CREATED,
        )
