"""Builds provider adapters: the only place Django code touches providers/.

Imports of the local provider stay inside the functions so that the web process never loads
torch; only the worker that trains or generates pays for it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from providers.base import ChatModel, FineTuner, HostedFineTuner, ProviderError

from .models import BaseModel, Provider


def base_model_dir(base_model: BaseModel) -> Path:
    if base_model.provider != Provider.LOCAL:
        raise ValueError(f"No local weights for provider {base_model.provider!r}")
    from providers.local_weights import ensure_base_model

    return ensure_base_model(Path(settings.FTPORTAL_MODEL_CACHE))


def fine_tuner_for(base_model: BaseModel) -> FineTuner:
    from providers.local import LocalLoRAFineTuner

    return LocalLoRAFineTuner(base_model_dir(base_model))


def chat_model_for(base_model: BaseModel, *, adapter_dir: str | None = None) -> ChatModel:
    from providers.local import LocalChatModel

    return LocalChatModel(base_model_dir(base_model), Path(adapter_dir) if adapter_dir else None)


def hosted_fine_tuner_for(base_model: BaseModel) -> HostedFineTuner:
    """The adapter of a hosted provider, with credentials from this worker's environment."""
    if base_model.provider != Provider.OPENAI:
        raise ProviderError(f"No hosted fine-tuning adapter for provider {base_model.provider!r}")
    if not settings.OPENAI_API_KEY:
        raise ProviderError("OPENAI_API_KEY is not set in this worker's environment")
    from providers.openai_ft import OpenAIFineTuner

    return OpenAIFineTuner(
        api_key=settings.OPENAI_API_KEY,
        base_url=base_model.api_base_url or settings.OPENAI_BASE_URL or None,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
    )
