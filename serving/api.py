"""API of application keys under /api/projects/<project_id>/app-keys/: every member lists
them (names, prefixes, limits, last use, expiry; never a secret); leads and admins create one
(its plaintext answered once) and revoke one. Experiments under .../experiments/: every member
reads them and their results; leads and admins create, start, stop and conclude them.
Fallback routes under .../fallback-routes/: every member reads them, leads and admins create,
change and remove them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import BaseModel
from catalog.selectors import base_model_by_key
from ftportal.api import (
    PAGINATION_PARAMETERS,
    IdField,
    InputSerializer,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action
from registry.models import ModelVersion
from registry.selectors import model_versions_of, registered_model_in_project

from .models import (
    ARM_NAME_MAX_LENGTH,
    EXPERIMENT_NAME_MAX_LENGTH,
    KEY_NAME_MAX_LENGTH,
    MAX_ARM_WEIGHT,
    MAX_ARMS,
    MAX_COOLDOWN_SECONDS,
    MAX_FAILURES_TO_OPEN,
    MAX_RATE_LIMIT_PER_MINUTE,
    MAX_TIMEOUT_SECONDS,
    MIN_ROUTE_SECONDS,
    OUTCOME_NAME_MAX_LENGTH,
    ApplicationKey,
    Experiment,
    ExperimentArm,
    ExperimentStatus,
    FallbackRoute,
)
from .selectors import (
    ArmResult,
    ExperimentVerdict,
    Interval,
    application_key_in_project,
    application_keys_of,
    experiment_arm_results,
    experiment_in_project,
    experiment_verdict,
    experiments_of,
    fallback_route_in_project,
    fallback_routes_of,
    route_alias_in_project,
)
from .services import (
    ArmSpec,
    RouteSettings,
    application_key_create,
    application_key_revoke,
    experiment_conclude,
    experiment_create,
    experiment_start,
    experiment_stop,
    fallback_route_change,
    fallback_route_create,
    fallback_route_remove,
)


class ApplicationKeyOutput(serializers.Serializer[ApplicationKey]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's public start, shown in lists and logs.")
    rate_limit_per_minute = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(
        allow_null=True, help_text="Updated at most once a minute."
    )
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)


class CreatedApplicationKeyOutput(ApplicationKeyOutput):
    key = serializers.CharField(
        help_text="The whole key, to send as 'Authorization: Bearer <key>': answered this once "
        "and stored only hashed, so it cannot be shown again."
    )


class ApplicationKeyCollectionApi(APIView):
    class ApplicationKeyCreateInput(InputSerializer):
        name = serializers.CharField(max_length=KEY_NAME_MAX_LENGTH)
        expires_at = serializers.DateTimeField(
            required=False,
            allow_null=True,
            default=None,
            help_text="When the key stops working; left out, it works until revoked.",
        )
        rate_limit_per_minute = serializers.IntegerField(
            required=False,
            allow_null=True,
            default=None,
            min_value=1,
            max_value=MAX_RATE_LIMIT_PER_MINUTE,
            help_text="Requests a minute; left out, the site's default.",
        )

    @extend_schema(
        operation_id="app_keys_list",
        summary="The project's application keys, live and revoked, newest first (no secrets)",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("ApplicationKeyPage", ApplicationKeyOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=application_keys_of(project),
            serializer_class=ApplicationKeyOutput,
        )

    @extend_schema(
        operation_id="app_keys_create",
        summary="Create an application key; the answer carries the whole key, this once",
        request=ApplicationKeyCreateInput,
        responses={201: CreatedApplicationKeyOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
        )
        payload = self.ApplicationKeyCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data: dict[str, Any] = payload.validated_data
        created = application_key_create(
            project=project,
            user=acting_user(request),
            name=data["name"],
            expires_at=data["expires_at"],
            rate_limit_per_minute=data["rate_limit_per_minute"],
        )
        body = {**ApplicationKeyOutput(created.key).data, "key": created.plaintext}
        # The plaintext is in this answer only: no cache may keep a copy.
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class ApplicationKeyDetailApi(APIView):
    @extend_schema(
        operation_id="app_keys_retrieve",
        summary="One application key (no secret)",
        responses=ApplicationKeyOutput,
    )
    def get(self, request: Request, project_id: int, key_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(ApplicationKeyOutput(application_key_in_project(project, key_id)).data)


class ApplicationKeyRevokeApi(APIView):
    @extend_schema(
        operation_id="app_keys_revoke",
        summary="Revoke an application key: its next request is refused with a 401",
        request=None,
        responses=ApplicationKeyOutput,
    )
    def post(self, request: Request, project_id: int, key_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
        )
        key = application_key_in_project(project, key_id)
        refuse_any_input(request)
        key = application_key_revoke(key=key, user=acting_user(request))
        return Response(ApplicationKeyOutput(key).data)


# --- experiments ----------------------------------------------------------------------------
# Every member reads experiments and their results; leads and admins create, start, stop and
# conclude them (Action.MANAGE_EXPERIMENTS).


class ExperimentArmOutput(serializers.Serializer[ExperimentArm]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    position = serializers.IntegerField()
    model_version_id = serializers.IntegerField(allow_null=True)
    model_version_number = serializers.IntegerField(source="model_version.number", allow_null=True)
    base_model_key = serializers.CharField(source="base_model.key", allow_null=True)
    weight = serializers.IntegerField(help_text="0 for the shadow arm, which never answers.")
    shadow = serializers.BooleanField(source="is_shadow")


class ExperimentOutput(serializers.Serializer[Experiment]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    registered_model_id = serializers.IntegerField()
    registered_model_name = serializers.CharField(source="registered_model.name")
    alias = serializers.CharField()
    success_event = serializers.CharField()
    status = serializers.ChoiceField(choices=ExperimentStatus.choices)
    shadow_share = serializers.FloatField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    conclusion = serializers.CharField(help_text="The verdict as it read when it ended.")
    promoted_version_id = serializers.IntegerField(allow_null=True)
    arms = ExperimentArmOutput(many=True)


class IntervalOutput(serializers.Serializer[Interval]):
    value = serializers.FloatField()
    low = serializers.FloatField()
    high = serializers.FloatField()


class ArmResultOutput(serializers.Serializer[ArmResult]):
    arm_id = serializers.IntegerField(source="arm.pk")
    arm = serializers.CharField(source="arm.name")
    shadow = serializers.BooleanField(source="arm.is_shadow")
    requests = serializers.IntegerField()
    successes = serializers.IntegerField()
    success_rate = IntervalOutput(
        source="success",
        allow_null=True,
        help_text="Share of requests with at least one success event, 95 % Wilson interval.",
    )
    feedback_count = serializers.IntegerField()
    feedback_score = IntervalOutput(
        source="feedback", allow_null=True, help_text="Mean feedback score, 95 % interval."
    )
    error_rate = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    cost_per_1000_usd = serializers.DecimalField(
        source="cost_per_1000",
        max_digits=20,
        decimal_places=4,
        allow_null=True,
        help_text="Null when any request of the arm is unpriced (never a silent 0).",
    )


class ExperimentVerdictOutput(serializers.Serializer[ExperimentVerdict]):
    sentence = serializers.CharField()
    rule = serializers.CharField()
    winner_arm_id = serializers.IntegerField(source="winner.pk", allow_null=True)


class ExperimentDetailOutput(ExperimentOutput):
    results = ArmResultOutput(many=True)
    verdict = ExperimentVerdictOutput()


def _detail(experiment: Experiment) -> dict[str, Any]:
    results = experiment_arm_results(experiment)
    experiment.results = results  # type: ignore[attr-defined]
    experiment.verdict = experiment_verdict(experiment, results)  # type: ignore[attr-defined]
    return dict(ExperimentDetailOutput(experiment).data)


class ExperimentArmInput(InputSerializer):
    name = serializers.CharField(max_length=ARM_NAME_MAX_LENGTH)
    weight = serializers.IntegerField(
        required=False, default=1, min_value=1, max_value=MAX_ARM_WEIGHT
    )
    model_version_id = IdField(
        required=False,
        allow_null=True,
        default=None,
        help_text="A version of the experiment's model; or give base_model_key.",
    )
    base_model_key = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=200,
        help_text="A catalog base model served as it is (a hosted baseline).",
    )
    shadow = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Mirrored to for shadow_share of requests; its answers never returned.",
    )


class ExperimentCollectionApi(APIView):
    class ExperimentCreateInput(InputSerializer):
        name = serializers.CharField(max_length=EXPERIMENT_NAME_MAX_LENGTH)
        registered_model_id = IdField()
        alias = serializers.CharField(
            max_length=100, help_text="The alias the application calls, e.g. production."
        )
        success_event = serializers.CharField(
            max_length=OUTCOME_NAME_MAX_LENGTH,
            help_text="The outcome event's name that counts as a success.",
        )
        shadow_share = serializers.FloatField(
            required=False, default=0.0, min_value=0.0, max_value=1.0
        )
        arms = serializers.ListField(child=ExperimentArmInput(), min_length=2, max_length=MAX_ARMS)

    @extend_schema(
        operation_id="experiments_list",
        summary="The project's experiments, newest first",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("ExperimentPage", ExperimentOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_EXPERIMENTS
        )
        return paginated_response(
            request=request,
            view=self,
            queryset=experiments_of(project),
            serializer_class=ExperimentOutput,
        )

    @extend_schema(
        operation_id="experiments_create",
        summary="Create a draft experiment on an alias, with its arms",
        request=ExperimentCreateInput,
        responses={201: ExperimentOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_EXPERIMENTS
        )
        payload = self.ExperimentCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data: dict[str, Any] = payload.validated_data
        experiment = experiment_create(
            project=project,
            user=acting_user(request),
            name=data["name"],
            registered_model=registered_model_in_project(project, data["registered_model_id"]),
            alias=data["alias"],
            success_event=data["success_event"],
            shadow_share=data["shadow_share"],
            arms=[ArmSpec(**arm) for arm in data["arms"]],
        )
        created = experiment_in_project(project, experiment.pk)
        return Response(ExperimentOutput(created).data, status=status.HTTP_201_CREATED)


class ExperimentDetailApi(APIView):
    @extend_schema(
        operation_id="experiments_retrieve",
        summary="One experiment with each arm's results and the verdict on the success metric",
        responses=ExperimentDetailOutput,
    )
    def get(self, request: Request, project_id: int, experiment_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.READ_EXPERIMENTS
        )
        return Response(_detail(experiment_in_project(project, experiment_id)))


def _acted(
    request: Request,
    project_id: int,
    experiment_id: int,
    service: Callable[..., Experiment],
) -> Response:
    """A lead's action on one experiment (start, stop, conclude), answered with its results."""
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_EXPERIMENTS
    )
    experiment = experiment_in_project(project, experiment_id)
    refuse_any_input(request)
    service(experiment=experiment, user=acting_user(request))
    return Response(_detail(experiment_in_project(project, experiment_id)))


class ExperimentStartApi(APIView):
    @extend_schema(
        operation_id="experiments_start",
        summary="Start splitting the alias's traffic between the arms (409 when another "
        "experiment runs there; 400 when the vLLM server's max_loras is too small)",
        request=None,
        responses=ExperimentDetailOutput,
    )
    def post(self, request: Request, project_id: int, experiment_id: int) -> Response:
        return _acted(request, project_id, experiment_id, experiment_start)


class ExperimentStopApi(APIView):
    @extend_schema(
        operation_id="experiments_stop",
        summary="Stop the experiment without promoting anything",
        request=None,
        responses=ExperimentDetailOutput,
    )
    def post(self, request: Request, project_id: int, experiment_id: int) -> Response:
        return _acted(request, project_id, experiment_id, experiment_stop)


class ExperimentConcludeApi(APIView):
    @extend_schema(
        operation_id="experiments_conclude",
        summary="Promote the winning arm's version through the promotion gate and end the "
        "experiment (409 with the reason when no arm has won, a hosted baseline won, or the "
        "gate refuses)",
        request=None,
        responses=ExperimentDetailOutput,
    )
    def post(self, request: Request, project_id: int, experiment_id: int) -> Response:
        return _acted(request, project_id, experiment_id, experiment_conclude)


# --- fallback routes ----------------------------------------------------------------------------


class FallbackRouteOutput(serializers.Serializer[FallbackRoute]):
    id = serializers.IntegerField()
    model = serializers.IntegerField(source="alias.registered_model_id")
    model_name = serializers.CharField(source="alias.registered_model.name")
    alias = serializers.CharField(source="alias.name")
    serves_now = serializers.IntegerField(
        source="alias.model_version.number",
        help_text="The version number the alias serves now: the primary.",
    )
    fallback_version = serializers.IntegerField(
        source="fallback_version_id", allow_null=True, help_text="A model version's id, or null."
    )
    fallback_version_number = serializers.IntegerField(
        source="fallback_version.number", allow_null=True, default=None
    )
    fallback_base_model = serializers.CharField(
        source="fallback_base_model.key",
        allow_null=True,
        default=None,
        help_text="A catalog key (a hosted model as it is), or null.",
    )
    timeout_seconds = serializers.FloatField()
    failures_to_open = serializers.IntegerField()
    cooldown_seconds = serializers.FloatField()
    enabled = serializers.BooleanField()
    fallbacks_last_24h = serializers.IntegerField(
        help_text="Requests this route answered in the last 24 hours, from the request log."
    )
    updated_at = serializers.DateTimeField()
    updated_by = serializers.CharField(source="updated_by.username", allow_null=True, default=None)


def _not_in_project(field: str, message: str) -> serializers.ValidationError:
    # Same message whether the object exists elsewhere or not, so other projects do not leak.
    return serializers.ValidationError({field: [message]})


def _route_target(
    project: Project, data: dict[str, Any]
) -> tuple[ModelVersion | None, BaseModel | None]:
    """The body's target: a version of the project (400 naming ``fallback_version``
    otherwise) or a catalog key (400 naming ``fallback_base_model``)."""
    version = base = None
    if data.get("fallback_version") is not None:
        version = model_versions_of(project).filter(pk=data["fallback_version"]).first()
        if version is None:
            raise _not_in_project(
                "fallback_version", f"No model version {data['fallback_version']} in this project."
            )
    if data.get("fallback_base_model") is not None:
        base = base_model_by_key(data["fallback_base_model"])
        if base is None:
            raise _not_in_project(
                "fallback_base_model",
                f"No base model {data['fallback_base_model']!r} in the catalog.",
            )
    return version, base


class _RouteSettingsInput(InputSerializer):
    fallback_version = IdField(
        required=False,
        allow_null=True,
        help_text="A version of the alias's own model (e.g. the previous production version). "
        "Give this or fallback_base_model.",
    )
    fallback_base_model = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=100,
        help_text="A catalog key: a hosted model answers as it is. Give this or fallback_version.",
    )
    timeout_seconds = serializers.FloatField(
        required=False,
        min_value=MIN_ROUTE_SECONDS,
        max_value=MAX_TIMEOUT_SECONDS,
        help_text="How long the primary may take before the fallback answers.",
    )
    failures_to_open = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_FAILURES_TO_OPEN,
        help_text="Failures in a row that open the primary's circuit breaker.",
    )
    cooldown_seconds = serializers.FloatField(
        required=False,
        min_value=MIN_ROUTE_SECONDS,
        max_value=MAX_COOLDOWN_SECONDS,
        help_text="How long an open breaker sends everything to the fallback before one trial "
        "request asks the primary again.",
    )
    enabled = serializers.BooleanField(required=False)


def _route_response(project: Project, route: FallbackRoute, **kwargs: Any) -> Response:
    """The route as the list shows it (read again, with its counts)."""
    return Response(
        FallbackRouteOutput(fallback_route_in_project(project, route.pk)).data, **kwargs
    )


class FallbackRouteCollectionApi(APIView):
    class FallbackRouteCreateInput(_RouteSettingsInput):
        model = IdField(help_text="The registered model whose alias this route serves.")
        alias = serializers.CharField(max_length=50, help_text="The alias, e.g. production.")

    @extend_schema(
        operation_id="fallback_routes_list",
        summary="The project's fallback routes, one per alias that has one, with their "
        "fallbacks in the last 24 hours",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("FallbackRoutePage", FallbackRouteOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=fallback_routes_of(project),
            serializer_class=FallbackRouteOutput,
        )

    @extend_schema(
        operation_id="fallback_routes_create",
        summary="Give an alias a fallback route: a version of its model or a catalog base "
        "model answers when the alias's version fails, times out or its breaker is open",
        request=FallbackRouteCreateInput,
        responses={201: FallbackRouteOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_ROUTES
        )
        payload = self.FallbackRouteCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data: dict[str, Any] = payload.validated_data
        alias = route_alias_in_project(project, data["model"], data["alias"])
        if alias is None:
            raise _not_in_project(
                "alias",
                f"The project's model {data['model']} has no alias {data['alias']!r} "
                "(an alias exists once a version is promoted to it).",
            )
        version, base = _route_target(project, data)
        defaults = RouteSettings(fallback_version=None, fallback_base_model=None)
        route = fallback_route_create(
            alias=alias,
            user=acting_user(request),
            wanted=RouteSettings(
                fallback_version=version,
                fallback_base_model=base,
                timeout_seconds=data.get("timeout_seconds", defaults.timeout_seconds),
                failures_to_open=data.get("failures_to_open", defaults.failures_to_open),
                cooldown_seconds=data.get("cooldown_seconds", defaults.cooldown_seconds),
                enabled=data.get("enabled", defaults.enabled),
            ),
        )
        return _route_response(project, route, status=status.HTTP_201_CREATED)


class FallbackRouteDetailApi(APIView):
    class FallbackRouteChangeInput(_RouteSettingsInput):
        pass

    @extend_schema(
        operation_id="fallback_routes_retrieve",
        summary="One fallback route",
        responses=FallbackRouteOutput,
    )
    def get(self, request: Request, project_id: int, route_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return _route_response(project, fallback_route_in_project(project, route_id))

    @extend_schema(
        operation_id="fallback_routes_change",
        summary="Change a fallback route: what is sent changes, the rest stays; sending either "
        "target replaces the target (the other becomes null)",
        request=FallbackRouteChangeInput,
        responses=FallbackRouteOutput,
    )
    def patch(self, request: Request, project_id: int, route_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_ROUTES
        )
        route = fallback_route_in_project(project, route_id)
        payload = self.FallbackRouteChangeInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data: dict[str, Any] = payload.validated_data
        if "fallback_version" in data or "fallback_base_model" in data:
            version, base = _route_target(project, data)
        else:
            version, base = route.fallback_version, route.fallback_base_model
        route = fallback_route_change(
            route=route,
            user=acting_user(request),
            wanted=RouteSettings(
                fallback_version=version,
                fallback_base_model=base,
                timeout_seconds=data.get("timeout_seconds", route.timeout_seconds),
                failures_to_open=data.get("failures_to_open", route.failures_to_open),
                cooldown_seconds=data.get("cooldown_seconds", route.cooldown_seconds),
                enabled=data.get("enabled", route.enabled),
            ),
        )
        return _route_response(project, route)

    @extend_schema(
        operation_id="fallback_routes_remove",
        summary="Remove a fallback route: the alias serves without one from the next request on",
        request=None,
        responses={204: None},
    )
    def delete(self, request: Request, project_id: int, route_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_ROUTES
        )
        route = fallback_route_in_project(project, route_id)
        refuse_any_input(request)
        fallback_route_remove(route=route)
        return Response(status=status.HTTP_204_NO_CONTENT)
