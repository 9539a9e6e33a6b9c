"""Brute-force protection for both ways of signing in: the login page and POST /api/auth/token/.

django-axes counts failed sign-ins (it hears Django's ``user_login_failed``, which both ways
send) and locks an account from one client address after AXES_FAILURE_LIMIT failures, for
AXES_COOLOFF_TIME; a lock is per account and address, so another account, or the same account
from elsewhere, still signs in. The token endpoint adds two DRF throttles that count only its
failures, per account from any address and per address across accounts, so guessing spread over
many addresses or many accounts is slowed too. Every refusal is a 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta
from typing import Any, ClassVar

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView


class SignInLockBackend(AxesStandaloneBackend):
    """Axes' check that refuses a locked sign-in, first in AUTHENTICATION_BACKENDS.

    Axes refuses any authenticate() call without a request; one without a request comes from
    no client (a management command, the test client's ``login``), so there is nothing to
    count or lock, and it goes on to the password check. Every sign-in over HTTP (login page,
    admin, token endpoint) passes its request.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_ip(request: HttpRequest | Request) -> str:
    """The client's address: REMOTE_ADDR, or behind a TLS proxy (FTPORTAL_BEHIND_TLS_PROXY) the
    address that proxy appended last to X-Forwarded-For; earlier entries are the client's word."""
    if settings.FTPORTAL_BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return str(request.META.get("REMOTE_ADDR", ""))


def cooloff() -> timedelta:
    value = settings.AXES_COOLOFF_TIME
    return value if isinstance(value, timedelta) else timedelta(hours=float(value))


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


def account_locked_message() -> str:
    return (
        "Too many failed sign-ins for this account; "
        f"try again in {_minutes(cooloff().total_seconds())}."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any]
) -> HttpResponse:
    """What axes answers a locked sign-in: on the login page (and /admin/) the login form again
    with the reason; under /api/ the API's error shape. Both 429 with Retry-After."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": {"message": account_locked_message()}}, status=429)
        response["Retry-After"] = str(math.ceil(cooloff().total_seconds()))
        return response
    response = render(
        request,
        "registration/login.html",
        {"locked_message": account_locked_message(), "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(math.ceil(cooloff().total_seconds()))
    return response


class SignInRefused(exceptions.Throttled):
    """429 with Retry-After and a sentence for a person, not DRF's "Request was throttled"."""

    def __init__(self, *, message: str, wait: float) -> None:
        super().__init__(wait=wait)
        self.detail = exceptions.ErrorDetail(message, code="throttled")


def refuse_if_account_locked(request: Request, username: str) -> None:
    """Raises SignInRefused while axes holds this account locked for this client."""
    if AxesProxyHandler.is_locked(request._request, {"username": username}):
        raise SignInRefused(message=account_locked_message(), wait=cooloff().total_seconds())


class FailedSignInThrottle(SimpleRateThrottle):
    """Allows a request while fewer than the limit of failures fall in the cool-off window.

    Unlike DRF's rate throttles it counts only failures, which the view reports through
    ``record_failure``: a script that signs in correctly is never slowed.
    """

    limit_setting: ClassVar[str]
    refusal: ClassVar[str]

    def __init__(self) -> None:
        self.num_requests = int(getattr(settings, self.limit_setting))
        self.duration = int(cooloff().total_seconds())
        self.rate = f"{self.num_requests} failures per {self.duration} s"

    def ident_for(self, request: Request) -> str:
        raise NotImplementedError

    @classmethod
    def cache_key_for(cls, ident: str) -> str:
        # Hashed: a username is whatever the client sent, of any length.
        digest = hashlib.sha256(ident.encode()).hexdigest()
        return f"signin-failures:{cls.__name__}:{digest}"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        ident = self.ident_for(request)
        return self.cache_key_for(ident) if ident else None

    def throttle_success(self) -> bool:
        return True  # only failures are recorded

    def record_failure(self, request: Request, view: APIView) -> None:
        key = self.get_cache_key(request, view)
        if key is None:
            return
        now = self.timer()
        history = [t for t in self.cache.get(key, []) if t > now - self.duration]
        self.cache.set(key, [now, *history], self.duration)

    def message(self) -> str:
        return f"{self.refusal}; try again in {_minutes(self.wait() or 0)}."


def _username(request: Request) -> str:
    data = request.data
    value = data.get("username", "") if hasattr(data, "get") else ""
    return value.strip().lower() if isinstance(value, str) else ""


class FailedSignInsPerAccount(FailedSignInThrottle):
    """Failures for one username from any address: guessing spread over many clients."""

    limit_setting = "FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT"
    refusal = "Too many failed sign-ins for this account"

    def ident_for(self, request: Request) -> str:
        return _username(request)


class FailedSignInsPerClient(FailedSignInThrottle):
    """Failures from one address for any username: one client trying many accounts."""

    limit_setting = "FTPORTAL_TOKEN_FAILURES_PER_CLIENT"
    refusal = "Too many failed sign-ins from your address"

    def ident_for(self, request: Request) -> str:
        return client_ip(request)
