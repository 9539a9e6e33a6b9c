from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from .rules import base_url_refusal, effective_base_url, host_refusal, secret_env_refusal


class EndpointKind(models.TextChoices):
    OPENAI = "openai", "OpenAI API"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (vLLM, Ollama, a proxy)"
    ANTHROPIC = "anthropic", "Anthropic Messages API"


class Endpoint(models.Model):
    """A provider endpoint an admin registered: its URL, the worker variable holding its key,
    and the models it may be asked for. The key itself is never stored; workers read it from
    their environment when they call (``catalog.secrets.endpoint_credentials``), and send it
    only to this endpoint's URL."""

    name = models.SlugField(max_length=100, unique=True, help_text="What users pick it by.")
    kind = models.CharField(max_length=30, choices=EndpointKind.choices)
    base_url = models.CharField(
        max_length=300,
        blank=True,
        help_text="Blank: the operator's OPENAI_BASE_URL / ANTHROPIC_BASE_URL, else the "
        "provider's public API. Required for an OpenAI-compatible server.",
    )
    secret_env = models.CharField(
        "secret variable",
        max_length=100,
        blank=True,
        help_text="The name of the workers' environment variable holding the key; it must be "
        "listed in FTPORTAL_SECRET_ENVS. Blank only for an OpenAI-compatible server that "
        "needs no key.",
    )
    allowed_models = models.TextField(
        "models",
        blank=True,
        help_text="Model ids it may be asked for, one per line; blank: any.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def model_ids(self) -> list[str]:
        return [line.strip() for line in self.allowed_models.splitlines() if line.strip()]

    @property
    def url(self) -> str:
        """Where its calls go."""
        return effective_base_url(self.kind, self.base_url)

    def clean(self) -> None:
        """Field errors an admin sees on save; the worker checks the same rules again."""
        errors: dict[str, str] = {}
        self.base_url = self.base_url.strip()
        self.secret_env = self.secret_env.strip()
        if self.kind == EndpointKind.OPENAI_COMPATIBLE and not self.base_url:
            errors["base_url"] = "An OpenAI-compatible server needs its base URL."
        elif self.url:
            refusal = base_url_refusal(self.url) or host_refusal(self.url)
            if refusal:
                errors["base_url"] = refusal
        if self.secret_env:
            refusal = secret_env_refusal(self.secret_env)
            if refusal:
                errors["secret_env"] = refusal
        elif self.kind != EndpointKind.OPENAI_COMPATIBLE:
            errors["secret_env"] = "Name the variable holding this provider's key."
        if errors:
            raise ValidationError(errors)
