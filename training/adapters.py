"""Builds provider adapters: the only place Django code touches providers/.

Imports of the local provider stay inside the functions so that the web process never loads
torch; only the worker that trains or generates pays for it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from catalog.models import BaseModel, Provider
from catalog.secrets import endpoint_credentials
from catalog.weights import base_model_dir
from providers.base import ChatModel, FineTuner, HostedFineTuner, ProviderError


def fine_tuner_for(base_model: BaseModel) -> FineTuner:
    from providers.local import LocalLoRAFineTuner

    return LocalLoRAFineTuner(base_model_dir(base_model))


def chat_model_for(base_model: BaseModel, *, adapter_dir: str | None = None) -> ChatModel:
    from providers.local import LocalChatModel

    return LocalChatModel(base_model_dir(base_model), Path(adapter_dir) if adapter_dir else None)


def hosted_fine_tuner_for(base_model: BaseModel) -> HostedFineTuner:
    """The adapter of a hosted provider, calling the base model's registered endpoint with the
    key this worker holds for it (and only there)."""
    if base_model.provider != Provider.OPENAI:
        raise ProviderError(f"No hosted fine-tuning adapter for provider {base_model.provider!r}")
    credentials = endpoint_credentials(
        base_model.endpoint, model=base_model.key, who=base_model.display_name
    )
    from providers.openai_ft import OpenAIFineTuner

    return OpenAIFineTuner(
        api_key=credentials.api_key,
        base_url=credentials.base_url,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
    )
