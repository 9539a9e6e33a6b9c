"""Where a local base model's weights are on this machine: read from the catalog row alone, so
that datasets (token counts) and training (fine-tuning) both find them without importing each
other.

Imports of the local provider stay inside the functions so that the web process never loads
torch.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .models import BaseModel, Provider


def base_model_dir(base_model: BaseModel) -> Path:
    """The directory to load a local model from, converting a GGUF file once if needed."""
    if base_model.provider != Provider.LOCAL:
        raise ValueError(f"No local weights for provider {base_model.provider!r}")
    from providers.local.weights import ensure_base_model, ensure_model_dir

    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    if base_model.weights_path:
        return ensure_model_dir(Path(base_model.weights_path), cache)
    return ensure_base_model(cache)


def prepared_model_dir(base_model: BaseModel) -> Path:
    """Where a local model's files are, without converting anything (the web process must not
    spend tens of seconds dequantizing); it may not exist yet."""
    from providers.local.weights import BASE_MODEL_KEY, gguf_cache_key

    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    if not base_model.weights_path:
        return cache / BASE_MODEL_KEY
    source = Path(base_model.weights_path)
    if source.is_file():
        return cache / gguf_cache_key(source)
    return source


def kept_probes_dir() -> Path:
    """Where local training keeps its probe's measurements (providers/local/kept_probe.py),
    filed by the hardware they were taken on, so a cache shared by several hosts keeps each
    host's own."""
    return Path(settings.FTPORTAL_MODEL_CACHE) / "training-probes"
