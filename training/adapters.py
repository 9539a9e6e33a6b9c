"""Builds provider adapters: the only place Django code touches providers/.

Imports of the local provider stay inside the functions so that the web process never loads
torch; only the worker that trains or generates pays for it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from catalog.secrets import endpoint_credentials
from providers.base import ChatModel, FineTuner, HostedFineTuner, ProviderError

from .models import BaseModel, Provider


def base_model_dir(base_model: BaseModel) -> Path:
    """The directory to load a local model from, converting a GGUF file once if needed."""
    if base_model.provider != Provider.LOCAL:
        raise ValueError(f"No local weights for provider {base_model.provider!r}")
    from providers.local_weights import ensure_base_model, ensure_model_dir

    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    if base_model.weights_path:
        return ensure_model_dir(Path(base_model.weights_path), cache)
    return ensure_base_model(cache)


def prepared_model_dir(base_model: BaseModel) -> Path:
    """Where a local model's files are, without converting anything (the web process must not
    spend tens of seconds dequantizing); it may not exist yet."""
    from providers.local_weights import BASE_MODEL_KEY, gguf_cache_key

    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    if not base_model.weights_path:
        return cache / BASE_MODEL_KEY
    source = Path(base_model.weights_path)
    if source.is_file():
        return cache / gguf_cache_key(source)
    return source


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
