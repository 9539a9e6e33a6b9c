"""A bench on a fresh checkout prepares the base model it needs instead of stopping with "no
tokenizer ... run manage.py prepare_models"."""

from __future__ import annotations

from pathlib import Path

from bench.curation import tokenizer_counters
from bench.prepare import prepared_base_model
from datasets.quality.tokens import count_conversations
from providers.local.weights import BASE_MODEL_KEY


def test_curation_prepares_the_local_tokenizer_in_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "models"  # as on a new machine: nothing prepared

    counters = tokenizer_counters(["local", "o200k_base"], cache)

    assert (cache / BASE_MODEL_KEY / "tokenizer.json").is_file()
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert count_conversations([conversation], counters["local"]).total.sum() > 0
    # Prepared once: asking again finds it and changes nothing.
    weights = cache / BASE_MODEL_KEY / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert prepared_base_model(cache) == cache / BASE_MODEL_KEY
    assert weights.stat().st_mtime_ns == written
