"""API for quality analysis: start an analysis, read it, list its findings, bulk-fix exact
duplicates, and read a dataset version's readiness report."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.selectors import base_model_by_key
from datasets.selectors import (
    analysis_run_in_project,
    dataset_in_project,
    dataset_version_in_project,
)
from ftportal.api import (
    PAGINATION_PARAMETERS,
    InputSerializer,
    ListQueryInput,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.permissions import project_for
from ftportal.roles import Action

from ..models import AnalysisRun
from .findings import ALL_KINDS
from .selectors import duplicate_fix_count, findings_for
from .services import (
    analysis_run_create,
    dataset_version_readiness,
    exact_duplicates_reject,
)


class AnalysisOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    base_model = serializers.CharField(source="base_model_key")
    status = serializers.CharField()
    stats = serializers.JSONField(
        help_text="Token statistics (prompt_tokens, answer_tokens: min/mean/p95/max), "
        "tokens_per_epoch, training_tokens, cost_usd, and findings counted by kind."
    )
    failure_message = serializers.CharField()
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duplicate_fix_count = serializers.SerializerMethodField()

    def get_duplicate_fix_count(self, run: AnalysisRun) -> int:
        return duplicate_fix_count(run)


class AnalysisCollectionApi(APIView):
    class StartInput(InputSerializer):
        base_model = serializers.CharField(help_text="Catalog key of the base model.")

    @extend_schema(
        operation_id="datasets_analyses_start",
        summary="Validate, count tokens and run the quality analyzers in the background",
        request=StartInput,
        responses={201: AnalysisOutput},
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.ANALYZE)
        dataset = dataset_in_project(project, dataset_id)
        payload = self.StartInput(data=request.data)
        payload.is_valid(raise_exception=True)
        base_model = base_model_by_key(payload.validated_data["base_model"])
        if base_model is None:
            raise serializers.ValidationError({"base_model": ["Not in the base-model catalog."]})
        run = analysis_run_create(dataset=dataset, base_model=base_model, user=acting_user(request))
        return Response(AnalysisOutput(run).data, status=status.HTTP_201_CREATED)


class AnalysisDetailApi(APIView):
    @extend_schema(operation_id="analyses_retrieve", responses=AnalysisOutput)
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(AnalysisOutput(analysis_run_in_project(project, run_id)).data)


class FindingOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    example = serializers.IntegerField(source="example_id")
    kind = serializers.CharField()
    severity = serializers.CharField()
    message = serializers.CharField()
    group_key = serializers.CharField()


FindingPage = page_serializer("FindingPage", FindingOutput)


class FindingListApi(APIView):
    class FindingFilter(ListQueryInput):
        kind = serializers.ChoiceField(choices=[(k, k) for k in ALL_KINDS], required=False)

    @extend_schema(
        operation_id="analyses_findings_list",
        parameters=[FindingFilter, *PAGINATION_PARAMETERS],
        responses=FindingPage,
    )
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        run = analysis_run_in_project(project, run_id)
        filters = self.FindingFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        findings = findings_for(run, kind=filters.validated_data.get("kind"))
        return paginated_response(
            request=request,
            view=self,
            queryset=findings,
            serializer_class=FindingOutput,
            query=None,
        )


class DuplicateFixApi(APIView):
    class FixOutput(serializers.Serializer[Any]):
        rejected = serializers.IntegerField()

    @extend_schema(
        operation_id="analyses_fix_exact_duplicates",
        summary="Reject all but one example of each exact-duplicate group (409 if stale)",
        request=None,
        responses=FixOutput,
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
        run = analysis_run_in_project(project, run_id)
        refuse_any_input(request)
        rejected = exact_duplicates_reject(run=run, user=acting_user(request))
        return Response(self.FixOutput({"rejected": rejected}).data)


class ReadinessOutput(serializers.Serializer[Any]):
    examples = serializers.IntegerField()
    band = serializers.ChoiceField(
        choices=["insufficient", "recommended_start", "fine", "incomplete_split"],
        help_text="Under a label-set contract never better than insufficient while a label has "
        "fewer training examples than per_label.threshold, nor than incomplete_split while a "
        "label lacks a side of the split.",
    )
    # Shadows Field.label only for the type checker: DRF's metaclass moves declared fields off
    # the class, as ImportOutput.errors does in api.py.
    label = serializers.CharField(  # type: ignore[assignment]
        help_text='In the guide\'s words, e.g. "insufficient data".'
    )
    advice = serializers.CharField()
    validation_split = serializers.JSONField(help_text="present, train, validation, fraction")
    base_model = serializers.CharField(help_text="Whose tokenizer and context length were used.")
    tokens = serializers.JSONField(help_text="Prompt/answer token stats, tokens per epoch, cost.")
    findings = serializers.JSONField(help_text="Per kind: examples, severity, label.")
    # Reports stored before contracts existed lack these two keys.
    answer_contract = serializers.CharField(
        required=False,
        help_text="The contract the version was frozen under, in words; its violations are "
        "errors under findings.contract_violation.",
    )
    contract_override = serializers.JSONField(
        required=False,
        help_text="When approved examples broke the contract at freeze: reason and examples.",
    )
    per_label = serializers.JSONField(
        allow_null=True,
        help_text="Under a label-set contract: labels, threshold, mean_training_examples, "
        "validation_share, counts (label, train, validation; fewest training examples first), "
        "below_threshold, single_example (kept in training), without_validation, "
        "without_training. Null for any other contract.",
    )
    examples_with_errors = serializers.IntegerField()
    examples_with_findings = serializers.IntegerField()
    computed_at = serializers.CharField()


class VersionReadinessApi(APIView):
    @extend_schema(
        operation_id="dataset_versions_readiness",
        summary="Readiness report: size against the guide's bands, split, tokens, findings",
        responses=ReadinessOutput,
    )
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        version = dataset_version_in_project(project, version_id)
        return Response(ReadinessOutput(dataset_version_readiness(version=version)).data)
