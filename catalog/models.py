from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from .rules import (
    adapter_root_refusal,
    base_url_refusal,
    effective_base_url,
    host_refusal,
    secret_env_refusal,
)


class EndpointKind(models.TextChoices):
    OPENAI = "openai", "OpenAI API"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (vLLM, Ollama, a proxy)"
    ANTHROPIC = "anthropic", "Anthropic Messages API"
    VLLM = "vllm", "vLLM server serving LoRA adapters (GPU host)"


# What the gpu profile of docker-compose.yml starts vLLM with unless VLLM_MAX_LORAS says otherwise.
DEFAULT_MAX_LORAS = 4
# Kinds that speak OpenAI's chat completions at a URL the admin gives (no public default).
SELF_HOSTED_KINDS = frozenset({EndpointKind.OPENAI_COMPATIBLE, EndpointKind.VLLM})


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
    # vLLM servers only: where the adapters come from and how many may be loaded at once.
    adapter_root = models.CharField(
        "artifact store on the server",
        max_length=300,
        blank=True,
        help_text="vLLM only: the absolute path at which the vLLM host reads this site's "
        "artifact store (FTPORTAL_ARTIFACTS_DIR), e.g. /artifacts where the gpu profile mounts "
        "the shared volume. A model version's adapter is loaded from there.",
    )
    max_loras = models.PositiveSmallIntegerField(
        "max LoRAs",
        default=DEFAULT_MAX_LORAS,
        # Blank so that a form without it (an endpoint of another kind) keeps the default.
        blank=True,
        help_text="vLLM only: the server's --max-loras, how many adapters it serves at once "
        "(vLLM's own default is 1; the gpu profile starts it with VLLM_MAX_LORAS, 4 unless "
        "set). At least the arms of any experiment served there.",
    )
    # OpenAI's organisation cost report takes an admin key, not the key the calls use; with
    # it the ledger is reconciled with what the provider billed (costs.reconciliation).
    cost_report_secret_env = models.CharField(
        "cost report secret variable",
        max_length=100,
        blank=True,
        help_text="OpenAI only, optional: the name of the workers' environment variable holding "
        "an organisation admin key, with which the ledger is compared daily with OpenAI's own "
        "cost report (it must be listed in FTPORTAL_SECRET_ENVS). Blank: no reconciliation.",
    )
    # The day the provider stops accepting new fine-tuning jobs here (OpenAI: 2027-01-06 for
    # self-serve fine-tuning), an admin's dated entry; every base model it trains follows it.
    fine_tuning_ends_at = models.DateField(
        null=True,
        blank=True,
        help_text="The provider accepts no new fine-tuning jobs here from this day.",
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
        self.adapter_root = self.adapter_root.strip()
        self.cost_report_secret_env = self.cost_report_secret_env.strip()
        if self.kind in SELF_HOSTED_KINDS and not self.base_url:
            errors["base_url"] = "An OpenAI-compatible server needs its base URL."
        elif self.url:
            refusal = base_url_refusal(self.url) or host_refusal(self.url)
            if refusal:
                errors["base_url"] = refusal
        if self.secret_env:
            refusal = secret_env_refusal(self.secret_env)
            if refusal:
                errors["secret_env"] = refusal
        elif self.kind not in SELF_HOSTED_KINDS:
            errors["secret_env"] = "Name the variable holding this provider's key."
        if self.cost_report_secret_env:
            refusal = (
                "Only an OpenAI endpoint offers a cost report."
                if self.kind != EndpointKind.OPENAI
                else secret_env_refusal(self.cost_report_secret_env)
            )
            if refusal:
                errors["cost_report_secret_env"] = refusal
        if self.kind == EndpointKind.VLLM:
            refusal = adapter_root_refusal(self.adapter_root)
            if refusal:
                errors["adapter_root"] = refusal
        if not self.max_loras:  # None when an admin emptied the field
            if self.kind == EndpointKind.VLLM:
                errors["max_loras"] = "Give the server's --max-loras: at least 1."
            else:
                self.max_loras = DEFAULT_MAX_LORAS
        if errors:
            raise ValidationError(errors)


class Provider(models.TextChoices):
    LOCAL = "local", "Local LoRA (transformers + peft)"
    OPENAI = "openai", "OpenAI fine-tuning API"


class BaseModel(models.Model):
    """The catalog of base models a job may start from, what they cost, and when each goes
    away. Admins edit it (Django admin); seeded rows name their source."""

    key = models.CharField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    source = models.TextField(
        blank=True, help_text="Where the weights or the prices and dates come from."
    )
    # Local models: a Hugging Face model directory or a .gguf file; blank means the bundled
    # SmolLM2-135M-Instruct. Hosted models: unused (the key is the provider's model id).
    weights_path = models.CharField(max_length=500, blank=True)
    # Hosted models: the registered endpoint that trains and serves them (and whose secret the
    # worker sends there); admins pick it, nobody else names a URL or a key.
    endpoint = models.ForeignKey(
        Endpoint,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="base_models",
        help_text="Hosted models: the registered endpoint that trains and serves them.",
    )
    deprecated_at = models.DateField(
        null=True, blank=True, help_text="From this day no new fine-tuning jobs are accepted."
    )
    retires_at = models.DateField(
        null=True,
        blank=True,
        help_text="Shutdown: the model, and every model fine-tuned from it, stops serving.",
    )
    # Inference on models fine-tuned from this one stops (a provider may keep serving the base
    # longer, or shorter); an admin's dated entry, or None when none was announced.
    fine_tuned_inference_ends_at = models.DateField(
        null=True,
        blank=True,
        help_text="Models fine-tuned from this one stop serving on this day.",
    )
    # Where the lifecycle dates come from and when they were last read there: the provider's
    # model list (catalog.lifecycle, daily) or an admin's dated manual entry.
    lifecycle_source = models.CharField(max_length=300, blank=True)
    lifecycle_checked_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    context_window = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per example the model accepts in training."
    )
    # "" means the model's own tokenizer (local models); hosted models name a tiktoken encoding.
    tokenizer = models.CharField(max_length=50, blank=True)
    training_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    # What the fine-tuned model costs to call, per million tokens.
    input_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    output_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )

    class Meta:
        ordering = ["parameter_count", "key"]
        # The catalog began in the training app; the table keeps its name so that moving the
        # model here (catalog 0003, training 0010) changed no data and locked no table.
        db_table = "training_basemodel"

    def __str__(self) -> str:
        return self.display_name

    def clean(self) -> None:
        if self.provider == Provider.OPENAI:
            if self.endpoint is None:
                raise ValidationError({"endpoint": "A hosted model needs its registered endpoint."})
            if self.endpoint.kind in (EndpointKind.ANTHROPIC, EndpointKind.VLLM):
                raise ValidationError(
                    {"endpoint": "OpenAI fine-tuning needs an OpenAI(-compatible) endpoint."}
                )
