"""API of application keys under /api/projects/<project_id>/app-keys/: every member lists
them (names, prefixes, limits, last use, expiry; never a secret); leads and admins create one
(its plaintext answered once) and revoke one. Fallback routes under .../fallback-routes/:
every member reads them, leads and admins create, change and remove them."""

from __future__ import annotations

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
from registry.selectors import model_versions_of

from .models import (
    KEY_NAME_MAX_LENGTH,
    MAX_COOLDOWN_SECONDS,
    MAX_FAILURES_TO_OPEN,
    MAX_RATE_LIMIT_PER_MINUTE,
    MAX_TIMEOUT_SECONDS,
    MIN_ROUTE_SECONDS,
    ApplicationKey,
    FallbackRoute,
)
from .selectors import (
    application_key_in_project,
    application_keys_of,
    fallback_route_in_project,
    fallback_routes_of,
    route_alias_in_project,
)
from .services import (
    RouteSettings,
    application_key_create,
    application_key_revoke,
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
