"""The production page of an alias as JSON: ``GET /api/projects/<id>/production/<model_id>/
<alias>/?days=&bucket=`` answers the figures per bucket, over the whole range, and the alias's
promotions and rollbacks in it, from the page's own selectors. Every member reads it
(``Action.READ_MONITORING``); a wrong parameter is a 400 naming it, in the one error shape."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import InputSerializer
from ftportal.permissions import project_for
from ftportal.roles import Action
from registry.api import AliasChangeOutput

from .figures import BUCKETS, CONTRACT_SAMPLE
from .production_selectors import (
    DEFAULT_DAYS,
    HOURLY_UP_TO_DAYS,
    MAX_BUCKETS,
    MAX_DAYS,
    alias_production,
    default_bucket,
    production_range,
    served_alias_in_project,
)


class WindowFiguresOutput(serializers.Serializer[Any]):
    requests = serializers.IntegerField(
        help_text="Requests answered (ok or by the fallback route) or failed; refusals and "
        "the shadow arm's mirrors are left out."
    )
    fallbacks = serializers.IntegerField(help_text="Answered through the alias's fallback route.")
    answered = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True, help_text="Null without requests.")
    fallback_rate = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    cost_usd = serializers.DecimalField(
        max_digits=30, decimal_places=8, help_text="The requests with a known price only."
    )
    unpriced = serializers.IntegerField(help_text="Answered requests without a known price.")
    feedback_count = serializers.IntegerField()
    feedback_rate = serializers.FloatField(allow_null=True)
    feedback_score = serializers.FloatField(allow_null=True, help_text="Mean, 0 to 1.")
    successes = serializers.IntegerField(help_text="Requests with at least one outcome event.")
    success_rate = serializers.FloatField(allow_null=True)
    contract_checked = serializers.IntegerField(
        help_text=f"Answers checked against their version's contract: the newest "
        f"{CONTRACT_SAMPLE:,} of a window, or the newest of each bucket."
    )
    contract_valid = serializers.IntegerField()
    contract_validity = serializers.FloatField(
        allow_null=True, help_text="Null when no served version's dataset has a contract."
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "errors" names a serializer's own property, so the field is added here, after
        # "requests" as the figures read.
        fields = super().get_fields()
        ordered = {"requests": fields.pop("requests"), "errors": serializers.IntegerField()}
        return {**ordered, **fields}


class BucketOutput(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="The bucket's start (UTC).")
    figures = WindowFiguresOutput()


class AliasProductionOutput(serializers.Serializer[Any]):
    model_id = serializers.IntegerField(source="alias.registered_model_id")
    model = serializers.CharField(source="alias.registered_model.name")
    alias = serializers.CharField(source="alias.name")
    serves_version = serializers.IntegerField(source="alias.model_version.number")
    since = serializers.DateTimeField(source="range.since")
    until = serializers.DateTimeField(source="range.until")
    days = serializers.IntegerField(source="range.days")
    bucket = serializers.CharField(source="range.bucket")
    whole = WindowFiguresOutput(help_text="The whole range.")
    series = BucketOutput(many=True)
    changes = AliasChangeOutput(many=True, help_text="Promotions and rollbacks, oldest first.")


class ProductionRangeInput(InputSerializer):
    days = serializers.IntegerField(required=False, min_value=1, max_value=MAX_DAYS)
    bucket = serializers.ChoiceField(choices=list(BUCKETS), required=False)


class AliasProductionApi(APIView):
    @extend_schema(
        operation_id="production_alias_figures",
        summary="An alias's production figures over the last days: per bucket, over the "
        "whole range, and its promotions and rollbacks",
        parameters=[
            OpenApiParameter(
                "days",
                {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
                description=f"Days up to now (default {DEFAULT_DAYS}).",
            ),
            OpenApiParameter(
                "bucket",
                {"type": "string", "enum": list(BUCKETS)},
                description=f"Default: hour up to {HOURLY_UP_TO_DAYS} days, else day; at most "
                f"{MAX_BUCKETS} buckets (a 400 names `bucket` beyond).",
            ),
        ],
        responses=AliasProductionOutput,
    )
    def get(self, request: Request, project_id: int, model_id: int, alias: str) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        served = served_alias_in_project(project, model_id, alias)
        query = ProductionRangeInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        data: dict[str, Any] = query.validated_data
        days = data.get("days", DEFAULT_DAYS)
        chosen = production_range(
            days=days, bucket=data.get("bucket", default_bucket(days)), until=timezone.now()
        )
        production = alias_production(served, chosen)
        body = {
            "alias": production.alias,
            "range": production.range,
            "whole": production.whole,
            "series": [{"start": start, "figures": found} for start, found in production.series],
            "changes": production.changes,
        }
        return Response(AliasProductionOutput(body).data)
