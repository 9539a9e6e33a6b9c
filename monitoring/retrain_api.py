"""API of a project's retraining proposals under /api/projects/<project_id>/retraining/: every
member lists and reads them (``Action.READ_MONITORING``; a proposal's estimate only where the
role reads costs); ML leads and admins accept one, which launches its training job, or dismiss
it (``Action.MANAGE_MONITORING`` and ``Action.TRAIN``). The same services as the pages."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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
from ftportal.roles import Action, role_allows

from .models import ProposalState, RetrainProposal
from .retrain_selectors import (
    project_for_retrain_decision,
    proposal_estimate,
    retrain_proposal_in_project,
    retrain_proposals_of,
)
from .retraining import MAX_NOTE_CHARS, retrain_accept, retrain_dismiss


class ReasonOutput(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=["new_examples", "drift", "base_retiring"])
    text = serializers.CharField()


class ProposalOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    registered_model = serializers.IntegerField(source="registered_model_id")
    registered_model_name = serializers.CharField(source="registered_model.name")
    alias = serializers.CharField()
    served_version = serializers.IntegerField(source="served_version_id")
    served_version_number = serializers.IntegerField(source="served_version.number")
    state = serializers.ChoiceField(choices=ProposalState.choices)
    reasons = ReasonOutput(many=True)
    dataset_version = serializers.IntegerField(
        source="dataset_version_id",
        allow_null=True,
        help_text="The dataset version the job trains on; null: the approved examples are "
        "frozen into a new version when the proposal is accepted.",
    )
    base_model = serializers.CharField(source="base_model.key")
    hyperparameters = serializers.DictField()
    evaluation_plan = serializers.DictField(
        help_text="The evaluation that gates the new version: the new version against the "
        "served one on the validation split, its metric, settings and margin."
    )
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True, default=None)
    decided_at = serializers.DateTimeField(allow_null=True)
    decision_note = serializers.CharField()
    training_job = serializers.IntegerField(source="training_job_id", allow_null=True)
    eval_run = serializers.IntegerField(
        source="eval_run_id",
        allow_null=True,
        help_text="The gating evaluation, queued once the accepted job's version is registered.",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ProposalDetailOutput(ProposalOutput):
    estimate = serializers.DictField(
        allow_null=True,
        help_text="The training launch estimate of an open proposal (training's own), for roles "
        "that read costs; null otherwise.",
    )
    estimate_basis = serializers.CharField(allow_null=True)


def _detail(proposal: RetrainProposal, role: str) -> dict[str, Any]:
    """A proposal as ProposalDetailOutput describes it."""
    data: dict[str, Any] = dict(ProposalOutput(proposal).data)
    estimate = proposal_estimate(proposal) if role_allows(role, Action.READ_COSTS) else None
    shown = estimate.estimate if estimate else None
    data["estimate"] = shown.as_dict() if shown else None
    data["estimate_basis"] = estimate.basis if estimate else None
    return data


class ProposalListApi(APIView):
    class ProposalQuery(ListQueryInput):
        state = serializers.ChoiceField(choices=[*ProposalState.values, "all"], default="all")

    @extend_schema(
        operation_id="retrain_proposals_list",
        summary="The project's retraining proposals, waiting ones first, then newest first",
        parameters=[
            *PAGINATION_PARAMETERS,
            OpenApiParameter("state", str, enum=[*ProposalState.values, "all"]),
        ],
        responses=page_serializer("RetrainProposalPage", ProposalOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        query = self.ProposalQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data["state"]
        proposals = retrain_proposals_of(project)
        if wanted != "all":
            proposals = proposals.filter(state=wanted)
        return paginated_response(
            request=request,
            view=self,
            queryset=proposals,
            serializer_class=ProposalOutput,
            query=None,
        )


class ProposalDetailApi(APIView):
    @extend_schema(
        operation_id="retrain_proposals_retrieve",
        summary="One retraining proposal, with its estimate while it is open",
        responses=ProposalDetailOutput,
    )
    def get(self, request: Request, project_id: int, proposal_id: int) -> Response:
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return Response(_detail(retrain_proposal_in_project(project, proposal_id), role))


class ProposalAcceptApi(APIView):
    @extend_schema(
        operation_id="retrain_proposals_accept",
        summary="Accept a proposal: launch its training job as you (training's own checks, "
        "the budget's hard cap included; 409 unless it is open)",
        request=None,
        responses=ProposalDetailOutput,
    )
    def post(self, request: Request, project_id: int, proposal_id: int) -> Response:
        project, role = project_for_retrain_decision(user=request.user, project_id=project_id)
        proposal = retrain_proposal_in_project(project, proposal_id)
        refuse_any_input(request)
        retrain_accept(proposal=proposal, user=acting_user(request))
        return Response(_detail(retrain_proposal_in_project(project, proposal_id), role))


class ProposalDismissApi(APIView):
    class DismissInput(InputSerializer):
        note = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=MAX_NOTE_CHARS,
            help_text="Why, for the record.",
        )

    @extend_schema(
        operation_id="retrain_proposals_dismiss",
        summary="Dismiss a proposal (409 unless it is open); nothing is launched",
        request=DismissInput,
        responses=ProposalDetailOutput,
    )
    def post(self, request: Request, project_id: int, proposal_id: int) -> Response:
        project, role = project_for_retrain_decision(user=request.user, project_id=project_id)
        proposal = retrain_proposal_in_project(project, proposal_id)
        payload = self.DismissInput(data=request.data)
        payload.is_valid(raise_exception=True)
        retrain_dismiss(
            proposal=proposal, user=acting_user(request), note=payload.validated_data["note"]
        )
        return Response(_detail(retrain_proposal_in_project(project, proposal_id), role))
