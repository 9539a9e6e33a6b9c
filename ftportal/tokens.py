"""API tokens: created with a password, stored hashed, expiring, revocable.

A key reads ``<prefix>.<secret>``, stored hashed the one way ``ftportal.hashed_secrets`` keeps
every key the product hands out. Clients send ``Authorization: Token <key>``.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.request import Request

from .hashed_secrets import last_used_due, new_secret, secret_matches, secret_sha256
from .models import ApiToken


def api_token_create(*, user: User) -> tuple[ApiToken, str]:
    """A new token for ``user``, and its plaintext key (which is not stored anywhere)."""
    prefix = secrets.token_hex(6)
    secret = new_secret()
    token = ApiToken.objects.create(
        user=user,
        prefix=prefix,
        secret_sha256=secret_sha256(secret),
        expires_at=timezone.now() + timedelta(days=settings.FTPORTAL_API_TOKEN_DAYS),
    )
    return token, f"{prefix}.{secret}"


def api_token_revoke(*, token: ApiToken) -> None:
    """Ends one token now; revoking a revoked token keeps its first revocation time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_tokens_revoke_for_user(*, user: User) -> int:
    """Ends every live token of ``user`` (a password change, signing out everywhere)."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def api_token_for_key(key: str) -> ApiToken:
    """The live token a key names; AuthenticationFailed saying why when there is none."""
    prefix, _, secret = key.partition(".")
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    # Compared even for an unknown prefix (secret_matches says why).
    matched = secret_matches(token.secret_sha256 if token else None, secret)
    if token is None or not matched:
        raise exceptions.AuthenticationFailed("Invalid token.")
    now = timezone.now()
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed(
            "This token was revoked; create a new one with POST /api/auth/token/."
        )
    if token.expires_at <= now:
        raise exceptions.AuthenticationFailed(
            f"This token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC; "
            "create a new one with POST /api/auth/token/."
        )
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("This account is disabled.")
    if last_used_due(token.last_used_at, now):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` checked against ApiToken (hashed, expiring, revocable).

    DRF's header parsing and its 401 challenge are kept; only the key lookup is ours.
    ``request.auth`` is the ApiToken, so DELETE /api/auth/token/ knows which one to revoke.
    """

    def authenticate_credentials(self, key: str) -> tuple[User, ApiToken]:
        token = api_token_for_key(key)
        return token.user, token


def presented_token(request: Request) -> ApiToken | None:
    """The token this request authenticated with; None for a browser session."""
    return request.auth if isinstance(request.auth, ApiToken) else None
