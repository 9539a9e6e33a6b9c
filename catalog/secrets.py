"""The one place a secret is read: by a worker, at call time, for one registered endpoint.

The key and the URL come back together, so a key can only travel to its own endpoint. Every
check an admin's save runs is run again here, because settings (the operator's allow-lists) may
have changed since. Errors name the variable, never its value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from providers.base import ProviderError

from .models import Endpoint, EndpointKind
from .rules import base_url_refusal, host_refusal, secret_env_refusal

# What an OpenAI-compatible server without a key is sent: the SDK insists on some key.
NO_KEY = "unused"


@dataclass(frozen=True)
class Credentials:
    base_url: str
    # Left out of repr, so a logged or printed Credentials never shows it.
    api_key: str = field(repr=False)


def endpoint_credentials(endpoint: Endpoint | None, *, model: str, who: str) -> Credentials:
    """The URL and key to call ``model`` at ``endpoint``. ProviderError (starting with
    ``who``) when the endpoint may not be used from this worker."""
    if endpoint is None:
        raise ProviderError(f"{who}: no registered endpoint; an admin registers one.")
    refusal = endpoint_refusal(endpoint) or model_refusal(endpoint, model=model)
    if refusal:
        raise ProviderError(f"{who}: endpoint {endpoint.name}: {refusal}")
    if not endpoint.secret_env:
        return Credentials(base_url=endpoint.url, api_key=NO_KEY)
    refusal = secret_env_refusal(endpoint.secret_env)
    if refusal:
        raise ProviderError(f"{who}: endpoint {endpoint.name}: {refusal}")
    key = os.environ.get(endpoint.secret_env, "")
    if not key:
        raise ProviderError(
            f"{who}: endpoint {endpoint.name}: the variable {endpoint.secret_env} is not set "
            "on this worker."
        )
    return Credentials(base_url=endpoint.url, api_key=key)


def endpoint_cost_report_credentials(endpoint: Endpoint, *, who: str) -> Credentials:
    """The URL and organisation admin key to read ``endpoint``'s cost report with (its
    ``cost_report_secret_env``): the admin key goes to this endpoint's URL only, as its API key
    does. ProviderError (starting with ``who``) when it may not be read from this worker."""
    refusal = endpoint_refusal(endpoint) or _cost_report_refusal(endpoint)
    if refusal:
        raise ProviderError(f"{who}: endpoint {endpoint.name}: {refusal}")
    name = endpoint.cost_report_secret_env
    key = os.environ.get(name, "")
    if not key:
        raise ProviderError(
            f"{who}: endpoint {endpoint.name}: the variable {name} is not set on this worker."
        )
    return Credentials(base_url=endpoint.url, api_key=key)


def _cost_report_refusal(endpoint: Endpoint) -> str | None:
    if endpoint.kind != EndpointKind.OPENAI:
        return "only an OpenAI endpoint offers a cost report."
    if not endpoint.cost_report_secret_env:
        return "it names no cost report variable."
    return secret_env_refusal(endpoint.cost_report_secret_env)


def endpoint_refusal(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` may not be called now, or None: checked when a user names it and
    again by the worker."""
    if not endpoint.enabled:
        return "it is disabled."
    return base_url_refusal(endpoint.url) or host_refusal(endpoint.url)


def model_refusal(endpoint: Endpoint, *, model: str) -> str | None:
    """Why ``endpoint`` may not be asked for ``model``, or None."""
    allowed = endpoint.model_ids
    if allowed and model not in allowed:
        return f"it serves only {', '.join(allowed)}, not {model!r}."
    return None
