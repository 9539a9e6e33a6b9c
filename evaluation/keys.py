"""Which environment variable an evaluation candidate or judge may name as its API key."""

from __future__ import annotations

from django.conf import settings


def key_env_refusal(name: str) -> str | None:
    """Why a key variable may not be named, or None when it may: only the variables the
    workers' operator lists in FTPORTAL_EVAL_KEY_ENVS (empty: the provider's own key)."""
    name = name.strip()
    if not name:
        return None
    if not name.replace("_", "").isalnum():
        return "Give the name of an environment variable."
    if name not in settings.FTPORTAL_EVAL_KEY_ENVS:
        allowed = ", ".join(sorted(settings.FTPORTAL_EVAL_KEY_ENVS)) or "none"
        return (
            f"{name} is not a key variable evaluations may use. Whoever runs the workers lists "
            f"those in FTPORTAL_EVAL_KEY_ENVS (now: {allowed})."
        )
    return None
