"""API of a project's alerts, alert rules and monitoring settings under
/api/projects/<project_id>/: every member reads them (``Action.READ_MONITORING``); leads and
admins acknowledge and resolve alerts, edit rules and settings (``Action.MANAGE_MONITORING``).
The same services as the pages."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import (
    PAGINATION_PARAMETERS,
    IdField,
    InputSerializer,
    ListQueryInput,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.permissions import project_for
from ftportal.roles import Action

from .alerts import (
    STATE_FILTERS,
    alert_acknowledge,
    alert_in_project,
    alert_resolve,
    alerts_in_state,
)
from .models import AlertRule, Comparison, Figure, MonitoringSettings
from .selectors import monitoring_settings_of
from .services import (
    MAX_COOLDOWN_MINUTES,
    MAX_DRIFT_WINDOW_HOURS,
    MAX_MIN_VOLUME,
    MAX_RETRAIN_MIN_NEW_EXAMPLES,
    MAX_WINDOW_MINUTES,
    monitoring_settings_set,
    rule_create,
    rule_delete,
    rule_in_project,
    rule_update,
    rules_of,
)


class AlertOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    severity = serializers.CharField()
    key = serializers.CharField(help_text="What the alert is about; one unresolved alert per key.")
    title = serializers.CharField()
    message = serializers.CharField()
    rule = serializers.IntegerField(source="rule_id", allow_null=True)
    registered_model = serializers.IntegerField(source="registered_model_id", allow_null=True)
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
    value = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    state = serializers.CharField()
    first_raised_at = serializers.DateTimeField()
    last_raised_at = serializers.DateTimeField()
    times_raised = serializers.IntegerField()
    last_notified_at = serializers.DateTimeField(allow_null=True)
    notified = serializers.CharField(help_text="Where the last notification went, in words.")
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", allow_null=True, default=None
    )
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField(
        source="resolved_by.username",
        allow_null=True,
        default=None,
        help_text="Null with resolved_at set: it resolved itself.",
    )
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolution = serializers.CharField()


class AlertListApi(APIView):
    class AlertQuery(ListQueryInput):
        state = serializers.ChoiceField(choices=STATE_FILTERS, required=False, default="all")

    @extend_schema(
        operation_id="alerts_list",
        summary="The project's alerts, last raised first",
        parameters=[
            *PAGINATION_PARAMETERS,
            OpenApiParameter("state", str, enum=list(STATE_FILTERS)),
        ],
        responses=page_serializer("AlertPage", AlertOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        query = self.AlertQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        alerts = alerts_in_state(project, query.validated_data["state"])
        return paginated_response(
            request=request, view=self, queryset=alerts, serializer_class=AlertOutput, query=None
        )


class AlertDetailApi(APIView):
    @extend_schema(operation_id="alerts_retrieve", summary="One alert", responses=AlertOutput)
    def get(self, request: Request, project_id: int, alert_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return Response(AlertOutput(alert_in_project(project, alert_id)).data)


class AlertAcknowledgeApi(APIView):
    @extend_schema(
        operation_id="alerts_acknowledge",
        summary="Acknowledge an open alert: no more notifications while it is unresolved",
        request=None,
        responses=AlertOutput,
    )
    def post(self, request: Request, project_id: int, alert_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        alert = alert_in_project(project, alert_id)
        refuse_any_input(request)
        alert = alert_acknowledge(alert=alert, user=acting_user(request))
        return Response(AlertOutput(alert).data)


class AlertResolveApi(APIView):
    class ResolveInput(InputSerializer):
        note = serializers.CharField(required=False, allow_blank=True, max_length=2000)

    @extend_schema(
        operation_id="alerts_resolve",
        summary="Resolve an alert, with an optional note (409 when it is resolved already)",
        request=ResolveInput,
        responses=AlertOutput,
    )
    def post(self, request: Request, project_id: int, alert_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        alert = alert_in_project(project, alert_id)
        payload = self.ResolveInput(data=request.data)
        payload.is_valid(raise_exception=True)
        alert = alert_resolve(
            alert=alert, user=acting_user(request), note=payload.validated_data.get("note", "")
        )
        return Response(AlertOutput(alert).data)


# --- rules ------------------------------------------------------------------------------------


class RuleOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    registered_model = serializers.IntegerField(source="registered_model_id")
    registered_model_name = serializers.CharField(source="registered_model.name")
    alias = serializers.CharField()
    figure = serializers.CharField()
    comparison = serializers.CharField()
    threshold = serializers.FloatField()
    window_minutes = serializers.IntegerField()
    min_volume = serializers.IntegerField()
    cooldown_minutes = serializers.IntegerField()
    enabled = serializers.BooleanField()
    is_default = serializers.BooleanField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RuleInput(InputSerializer):
    registered_model = IdField()
    alias = serializers.CharField(max_length=50)
    figure = serializers.ChoiceField(choices=Figure.values)
    comparison = serializers.ChoiceField(choices=Comparison.values)
    threshold = serializers.FloatField(help_text="Shares as fractions: 0.05 is 5 %.")
    window_minutes = serializers.IntegerField(min_value=1, max_value=MAX_WINDOW_MINUTES)
    min_volume = serializers.IntegerField(min_value=0, max_value=MAX_MIN_VOLUME)
    cooldown_minutes = serializers.IntegerField(min_value=0, max_value=MAX_COOLDOWN_MINUTES)
    enabled = serializers.BooleanField(default=True)


def _rule_output(rule: AlertRule) -> dict[str, Any]:
    data: dict[str, Any] = RuleOutput(rule).data
    return data


class RuleListApi(APIView):
    @extend_schema(
        operation_id="alert_rules_list",
        summary="The project's alert rules",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("AlertRulePage", RuleOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return paginated_response(
            request=request, view=self, queryset=rules_of(project.pk), serializer_class=RuleOutput
        )

    @extend_schema(
        operation_id="alert_rules_create",
        summary="Add an alert rule",
        request=RuleInput,
        responses={201: RuleOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        payload = RuleInput(data=request.data)
        payload.is_valid(raise_exception=True)
        rule = rule_create(project=project, user=acting_user(request), data=payload.validated_data)
        return Response(_rule_output(rule), status=status.HTTP_201_CREATED)


class RuleDetailApi(APIView):
    @extend_schema(operation_id="alert_rules_retrieve", summary="One rule", responses=RuleOutput)
    def get(self, request: Request, project_id: int, rule_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return Response(_rule_output(rule_in_project(project, rule_id)))

    @extend_schema(
        operation_id="alert_rules_update",
        summary="Change a rule (a default rule keeps its model, alias and figure)",
        request=RuleInput,
        responses=RuleOutput,
    )
    def put(self, request: Request, project_id: int, rule_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        rule = rule_in_project(project, rule_id)
        payload = RuleInput(data=request.data)
        payload.is_valid(raise_exception=True)
        return Response(_rule_output(rule_update(rule=rule, data=payload.validated_data)))

    @extend_schema(
        operation_id="alert_rules_delete",
        summary="Remove a rule (a default rule is disabled instead)",
        responses={204: None},
    )
    def delete(self, request: Request, project_id: int, rule_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        rule = rule_in_project(project, rule_id)
        refuse_any_input(request)
        rule_delete(rule=rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- settings ---------------------------------------------------------------------------------


class SettingsOutput(serializers.Serializer[Any]):
    email_enabled = serializers.BooleanField()
    webhook = serializers.CharField(source="webhook.name", allow_null=True, default=None)
    drift_window_hours = serializers.IntegerField()
    drift_min_requests = serializers.IntegerField()
    retrain_min_new_examples = serializers.IntegerField()


def _settings_output(found: MonitoringSettings) -> dict[str, Any]:
    data: dict[str, Any] = SettingsOutput(found).data
    return data


class MonitoringSettingsApi(APIView):
    class MonitoringSettingsInput(InputSerializer):
        email_enabled = serializers.BooleanField()
        webhook = serializers.CharField(
            allow_blank=True, max_length=100, help_text="A registered webhook's name; '' none."
        )
        drift_window_hours = serializers.IntegerField(min_value=1, max_value=MAX_DRIFT_WINDOW_HOURS)
        drift_min_requests = serializers.IntegerField(min_value=1, max_value=MAX_MIN_VOLUME)
        retrain_min_new_examples = serializers.IntegerField(
            min_value=1, max_value=MAX_RETRAIN_MIN_NEW_EXAMPLES
        )

    @extend_schema(
        operation_id="monitoring_settings_retrieve",
        summary="Where the project's alerts go, and its drift and retraining settings",
        responses=SettingsOutput,
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_MONITORING
        )
        return Response(_settings_output(monitoring_settings_of(project.pk)))

    @extend_schema(
        operation_id="monitoring_settings_set",
        summary="Change the project's monitoring settings",
        request=MonitoringSettingsInput,
        responses=SettingsOutput,
    )
    def put(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MONITORING
        )
        payload = self.MonitoringSettingsInput(data=request.data)
        payload.is_valid(raise_exception=True)
        found = monitoring_settings_set(
            project=project, user=acting_user(request), data=payload.validated_data
        )
        return Response(_settings_output(found))
