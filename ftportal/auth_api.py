"""POST /api/auth/token/ creates an API token from a username and password; DELETE revokes the
token the request carries. Sign-in failures are limited (ftportal.signin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .api import InputSerializer, refuse_any_input
from .errors import ApplicationError
from .signin import (
    FailedSignInsPerAccount,
    FailedSignInsPerClient,
    FailedSignInThrottle,
    SignInRefused,
    refuse_if_account_locked,
)
from .tokens import api_token_create, api_token_revoke, presented_token


class AuthTokenApi(APIView):
    failure_throttles: ClassVar[tuple[type[FailedSignInThrottle], ...]] = (
        FailedSignInsPerAccount,
        FailedSignInsPerClient,
    )

    class TokenInput(InputSerializer):
        username = serializers.CharField()
        password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})

    class TokenOutput(serializers.Serializer[Any]):
        token = serializers.CharField(help_text="The key, shown only in this answer.")
        expires_at = serializers.DateTimeField()

    def _creating(self) -> bool:
        # No request while the schema is generated: describe the authenticated (DELETE) side.
        return getattr(self.request, "method", None) == "POST"

    def get_authenticators(self) -> list[BaseAuthentication]:
        # Creating a token takes a password: a stale or revoked token header must not stop it.
        return [] if self._creating() else super().get_authenticators()

    def get_permissions(self) -> Sequence[Any]:
        return [AllowAny()] if self._creating() else super().get_permissions()

    def _failure_throttles(self) -> list[FailedSignInThrottle]:
        return [throttle() for throttle in self.failure_throttles] if self._creating() else []

    def get_throttles(self) -> list[BaseThrottle]:
        return list(self._failure_throttles())

    def check_throttles(self, request: Request) -> None:
        for throttle in self._failure_throttles():
            if not throttle.allow_request(request, self):
                raise SignInRefused(message=throttle.message(), wait=throttle.wait() or 0)

    @extend_schema(
        operation_id="auth_token_create",
        summary="Create an API token (shown once; expires after FTPORTAL_API_TOKEN_DAYS)",
        request=TokenInput,
        responses={
            200: TokenOutput,
            400: OpenApiResponse(description="Wrong username or password"),
            429: OpenApiResponse(
                description="Too many failed sign-ins for this account or from this address; "
                "the Retry-After header says when to try again"
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        refuse_if_account_locked(request, username)
        user = authenticate(
            request=request._request, username=username, password=data.validated_data["password"]
        )
        if user is None:
            for throttle in self._failure_throttles():
                throttle.record_failure(request, self)
            # The failure just counted may be the one that locks the account.
            refuse_if_account_locked(request, username)
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to sign in with this username and password."]}
            )
        token, key = api_token_create(user=user)
        return Response(self.TokenOutput({"token": key, "expires_at": token.expires_at}).data)

    @extend_schema(
        operation_id="auth_token_revoke",
        summary="Revoke the token this request is authenticated with",
        request=None,
        responses={204: None},
    )
    def delete(self, request: Request) -> Response:
        refuse_any_input(request)
        token = presented_token(request)
        if token is None:
            raise ApplicationError(
                "DELETE /api/auth/token/ revokes the token sent in the Authorization header, and "
                "this request carried none (a browser session ends by logging out)."
            )
        api_token_revoke(token=token)
        return Response(status=204)
