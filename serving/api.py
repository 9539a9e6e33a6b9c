"""API of application keys under /api/projects/<project_id>/app-keys/: every member lists
them (names, prefixes, limits, last use, expiry; never a secret); leads and admins create one
(its plaintext answered once) and revoke one."""

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
from ftportal.permissions import project_for
from ftportal.roles import Action

from .models import KEY_NAME_MAX_LENGTH, MAX_RATE_LIMIT_PER_MINUTE, ApplicationKey
from .selectors import application_key_in_project, application_keys_of
from .services import application_key_create, application_key_revoke


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
