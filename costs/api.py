"""The managers' dashboard as JSON: GET /api/costs/ with the page's filter (``start``, ``end``,
``project``) answers the same figures the page shows, amounts as exact decimal strings."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .selectors import cost_dashboard, cost_projects
from .views import cost_filter_from


def _usd(**given: Any) -> serializers.DecimalField:
    """A dollar amount, exact, as a decimal string."""
    return serializers.DecimalField(max_digits=30, decimal_places=8, **given)


class SpendSumOutput(serializers.Serializer[Any]):
    amount_usd = _usd(source="amount")
    spends = serializers.IntegerField(source="entries")
    unpriced_spends = serializers.IntegerField(
        source="unpriced_entries", help_text="Spends with no known price: not summed, never $0."
    )


class MonthSpendOutput(serializers.Serializer[Any]):
    month = serializers.DateField(help_text="The month's first day.")
    kind = serializers.CharField()
    spend = SpendSumOutput()


class ProjectSpendOutput(serializers.Serializer[Any]):
    project_id = serializers.IntegerField(source="project.pk")
    project = serializers.CharField(source="project.name")
    total = SpendSumOutput()
    by_kind = serializers.DictField(child=SpendSumOutput())


class CostDriverOutput(serializers.Serializer[Any]):
    project_id = serializers.IntegerField(source="project.pk")
    kind = serializers.CharField()
    model_version_id = serializers.IntegerField(source="model_version.pk", allow_null=True)
    model_version = serializers.CharField(allow_null=True)
    spend = SpendSumOutput()
    tokens = serializers.DecimalField(max_digits=30, decimal_places=6)
    compute_seconds = serializers.DecimalField(max_digits=30, decimal_places=6)


class AlternativeOutput(serializers.Serializer[Any]):
    name = serializers.CharField()
    kind = serializers.CharField(source="kind_label")
    quality = serializers.FloatField()
    cost_per_request_usd = _usd(source="cost_per_request")
    eval_run_id = serializers.IntegerField(source="run_id")


class ProductionModelOutput(serializers.Serializer[Any]):
    project_id = serializers.IntegerField(source="project.pk")
    model_version_id = serializers.IntegerField(source="version.pk")
    model_version = serializers.CharField(source="version")
    requests = serializers.IntegerField(help_text="Answered requests in view (no shadows).")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    serving = SpendSumOutput()
    investment = SpendSumOutput(help_text="Training, evaluation and judging of this version.")
    alternative = AlternativeOutput(allow_null=True)
    alternative_usd = _usd(allow_null=True)
    savings_usd = _usd(allow_null=True)
    savings_to_date_usd = _usd(allow_null=True)
    net_to_date_usd = _usd(allow_null=True)
    payback = serializers.CharField()


class MetricPointOutput(serializers.Serializer[Any]):
    when = serializers.DateField()
    value = serializers.FloatField()
    count = serializers.IntegerField()


class MetricTrendOutput(serializers.Serializer[Any]):
    model_version_id = serializers.IntegerField(source="version.pk")
    metric = serializers.CharField(source="metric_label")
    offline = MetricPointOutput(many=True)
    online_feedback = MetricPointOutput(many=True)


class CostDashboardOutput(serializers.Serializer[Any]):
    start = serializers.DateField(source="chosen.start")
    end = serializers.DateField(source="chosen.end")
    project_ids = serializers.ListField(
        child=serializers.IntegerField(), source="chosen.project_ids"
    )
    total = SpendSumOutput()
    by_month = MonthSpendOutput(many=True)
    by_project = ProjectSpendOutput(many=True)
    drivers = CostDriverOutput(many=True)
    production = ProductionModelOutput(many=True)
    trends = MetricTrendOutput(many=True)


class CostDashboardApi(APIView):
    @extend_schema(
        operation_id="costs_dashboard",
        summary="Spend, cost drivers, savings and payback across the projects whose costs you "
        "may read (managers, ML leads and admins of a project; site admins: all)",
        parameters=[
            OpenApiParameter("start", str, description="First day, YYYY-MM-DD (UTC)."),
            OpenApiParameter("end", str, description="Last day, included; default today."),
            OpenApiParameter("project", int, description="One project's id; default all."),
        ],
        responses=CostDashboardOutput,
    )
    def get(self, request: Request) -> Response:
        projects = cost_projects(request.user)
        chosen = cost_filter_from(request.query_params, projects)
        return Response(CostDashboardOutput(cost_dashboard(chosen)).data)
