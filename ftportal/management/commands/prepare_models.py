"""Convert the shipped GGUF weights to the safetensors cache once, before the first job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Prepare the local base model cache (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        from providers.local.weights import ensure_base_model

        path = ensure_base_model(Path(settings.FTPORTAL_MODEL_CACHE))
        self.stdout.write(f"Base model ready in {path}")
