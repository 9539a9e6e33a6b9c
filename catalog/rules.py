"""What makes an endpoint usable: the checks an admin's save and a worker's call both run, so
the two can never disagree. Plain functions of settings and values; no database."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from django.conf import settings

# The provider's own API when neither the endpoint nor the operator's settings name another.
PUBLIC_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def default_base_url(kind: str) -> str:
    """Where an endpoint with a blank base URL sends its calls: the operator's
    OPENAI_BASE_URL / ANTHROPIC_BASE_URL, else the provider's public API."""
    if kind == "anthropic":
        return settings.ANTHROPIC_BASE_URL or PUBLIC_BASE_URLS["anthropic"]
    if kind == "openai":
        return settings.OPENAI_BASE_URL or PUBLIC_BASE_URLS["openai"]
    return ""


def effective_base_url(kind: str, base_url: str) -> str:
    return base_url.strip() or default_base_url(kind)


def base_url_refusal(url: str) -> str | None:
    """Why a URL cannot be an endpoint, or None. Credentials inside the URL are refused: the
    key comes from the worker's environment, nowhere else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Give an http(s) URL with a host, e.g. https://llm.internal.example/v1."
    if parts.username or parts.password:
        return "Leave credentials out of the URL; the key comes from the secret variable."
    if parts.query or parts.fragment:
        return "Give the base URL only, without a query or fragment."
    return None


def host_refusal(url: str) -> str | None:
    """None when FTPORTAL_ENDPOINT_HOSTS is empty or lists the URL's host."""
    allowed: frozenset[str] = settings.FTPORTAL_ENDPOINT_HOSTS
    if not allowed:
        return None
    host = (urlsplit(url).hostname or "").lower()
    if host in allowed:
        return None
    return (
        f"The host {host or '(none)'} is not in FTPORTAL_ENDPOINT_HOSTS "
        f"(now: {', '.join(sorted(allowed))})."
    )


def secret_env_refusal(name: str) -> str | None:
    """None when the operator lists ``name`` in FTPORTAL_SECRET_ENVS."""
    if not ENV_NAME.match(name):
        return "Give the name of an environment variable (capitals, digits and _)."
    allowed: frozenset[str] = settings.FTPORTAL_SECRET_ENVS
    if name not in allowed:
        return (
            f"{name} is not a secret variable endpoints may use. Whoever runs the workers "
            f"lists those in FTPORTAL_SECRET_ENVS (now: {', '.join(sorted(allowed)) or 'none'})."
        )
    return None


def adapter_root_refusal(root: str) -> str | None:
    """Why ``root`` cannot be where a vLLM host reads the artifact store, or None: an absolute
    path without ``..``, as the server's own file system names it."""
    path = PurePosixPath(root)
    if not root or not path.is_absolute() or ".." in path.parts:
        return (
            "Give the absolute path at which the vLLM host reads the artifact store "
            "(e.g. /artifacts), without '..'."
        )
    return None
