"""What the benches need before they time anything: the local base model and its tokenizer,
prepared exactly as ``python manage.py prepare_models`` prepares them (the same function), so
that a bench on a fresh checkout converts the shipped GGUF once (about 25 s) instead of stopping.
Idempotent: once prepared, it returns at once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from django.conf import settings

from providers.local.weights import ensure_base_model

REPO = Path(__file__).resolve().parent.parent
Reply = TypeVar("Reply")


def model_cache_dir() -> Path:
    """The cache the web app and workers use: Django's setting where Django is set up, else
    the same default the settings give (FTPORTAL_MODEL_CACHE, or var/models)."""
    if settings.configured:
        return Path(settings.FTPORTAL_MODEL_CACHE)
    return Path(os.environ.get("FTPORTAL_MODEL_CACHE") or REPO / "var" / "models")


def prepared_base_model(cache_dir: Path | None = None) -> Path:
    """The directory of the default base model (weights and tokenizer), converting it first if
    this cache has none yet."""
    cache = cache_dir if cache_dir is not None else model_cache_dir()
    print(f"base model: preparing in {cache} if needed (as manage.py prepare_models does)")
    return ensure_base_model(cache)


def time_sides(
    sides: Sequence[tuple[str, Callable[[], Reply]]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, Reply]]:
    """Each side's wall time per repeat, run back to back in the same process, in alternating
    order so that neither side always gets the warmer (or the quieter) turn; and each side's
    last replies, for checking the sides agree."""
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    replies: dict[str, Reply] = {}
    for repeat in range(repeats):
        for name, run in sides[::-1] if repeat % 2 else sides:
            side_started = time.perf_counter()
            replies[name] = run()
            seconds = time.perf_counter() - side_started
            times[name].append(seconds)
            load = os.getloadavg()[0]
            print(f"repeat {repeat + 1}: {name} {seconds:.2f}s (load {load:.1f})", flush=True)
    return times, replies
