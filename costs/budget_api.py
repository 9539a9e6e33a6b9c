"""API of a project's budget under /api/projects/<project_id>/budget/: managers, leads and
admins read the month's spend against it (``Action.READ_COSTS``); leads and admins set it
(PUT), remove it (DELETE) and acknowledge its alerts (``Action.SET_BUDGET``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
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
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action

from .budget_alerts import budget_alert_acknowledge, budget_alert_in_project, budget_alerts_of
from .budgets import (
    CENTS,
    MAX_MONTHLY_USD,
    BudgetStatus,
    budget_remove,
    budget_set,
    budget_status,
)


class BudgetOutput(serializers.Serializer[Any]):
    month = serializers.DateField(help_text="The first day of the calendar month (UTC).")
    monthly_usd = serializers.DecimalField(
        source="budget.monthly_usd",
        max_digits=14,
        decimal_places=2,
        allow_null=True,
        help_text="The monthly budget in dollars; null without a budget.",
    )
    hard_cap = serializers.BooleanField(source="budget.hard_cap", allow_null=True)
    spent_usd = serializers.DecimalField(
        max_digits=24,
        decimal_places=8,
        help_text="The month's priced spend so far, from the cost ledger.",
    )
    unpriced_entries = serializers.IntegerField(
        help_text="The month's spends with no known price: not in spent_usd, never counted as $0."
    )
    percent = serializers.DecimalField(
        max_digits=12, decimal_places=1, allow_null=True, help_text="spent_usd of the budget."
    )
    over_cap = serializers.BooleanField(
        help_text="The hard cap is reached: new training jobs, hosted evaluations and gateway "
        "chat requests are refused."
    )
    updated_by = serializers.CharField(
        source="budget.updated_by.username", allow_null=True, default=None
    )
    updated_at = serializers.DateTimeField(source="budget.updated_at", allow_null=True)


class BudgetAlertOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    month = serializers.DateField()
    threshold_percent = serializers.IntegerField()
    spent_usd = serializers.DecimalField(max_digits=24, decimal_places=8)
    budget_usd = serializers.DecimalField(max_digits=14, decimal_places=2)
    fired_at = serializers.DateTimeField()
    notified = serializers.SerializerMethodField(help_text="The addresses it was e-mailed to.")
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", allow_null=True, default=None
    )
    acknowledged_at = serializers.DateTimeField(allow_null=True)

    def get_notified(self, alert: Any) -> list[str]:
        return [address for address in alert.notified.splitlines() if address]


def _budget_response(project: Project, **kwargs: Any) -> Response:
    return Response(_output(budget_status(project)), **kwargs)


def _output(state: BudgetStatus) -> dict[str, Any]:
    data: dict[str, Any] = BudgetOutput(state).data
    return data


class BudgetApi(APIView):
    class BudgetInput(InputSerializer):
        monthly_usd = serializers.DecimalField(
            max_digits=14,
            decimal_places=2,
            min_value=CENTS,
            max_value=MAX_MONTHLY_USD,
            help_text="Dollars a calendar month (UTC), more than zero.",
        )
        hard_cap = serializers.BooleanField(
            help_text="Refuse new training jobs, hosted evaluations and gateway chat requests "
            "once the month's spend reaches the budget."
        )

    @extend_schema(
        operation_id="budget_retrieve",
        summary="The project's budget and its month so far",
        responses=BudgetOutput,
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.READ_COSTS)
        return _budget_response(project)

    @extend_schema(
        operation_id="budget_set",
        summary="Set the project's monthly budget, or change it",
        request=BudgetInput,
        responses=BudgetOutput,
    )
    def put(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
        payload = self.BudgetInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        budget_set(
            project=project,
            monthly_usd=data["monthly_usd"],
            hard_cap=data["hard_cap"],
            user=acting_user(request),
        )
        return _budget_response(project)

    @extend_schema(
        operation_id="budget_remove",
        summary="Remove the project's budget (its past alerts stay)",
        responses={204: None},
    )
    def delete(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
        refuse_any_input(request)
        budget_remove(project=project, user=acting_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BudgetAlertListApi(APIView):
    @extend_schema(
        operation_id="budget_alerts_list",
        summary="The project's budget alerts, newest first",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("BudgetAlertPage", BudgetAlertOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.READ_COSTS)
        return paginated_response(
            request=request,
            view=self,
            queryset=budget_alerts_of(project),
            serializer_class=BudgetAlertOutput,
        )


class BudgetAlertAcknowledgeApi(APIView):
    @extend_schema(
        operation_id="budget_alerts_acknowledge",
        summary="Acknowledge a budget alert (409 when it already is)",
        request=None,
        responses=BudgetAlertOutput,
    )
    def post(self, request: Request, project_id: int, alert_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.SET_BUDGET)
        alert = budget_alert_in_project(project, alert_id)
        refuse_any_input(request)
        alert = budget_alert_acknowledge(alert=alert, user=acting_user(request))
        return Response(BudgetAlertOutput(alert).data)
