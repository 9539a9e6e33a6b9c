"""Base models from a Hugging Face directory or any GGUF file (real SmolLM2 weights, no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from providers.base import ProviderError
from providers.local.weights import (
    ensure_base_model,
    ensure_model_dir,
    gguf_cache_key,
    gguf_path,
)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


def test_a_model_directory_is_used_as_it_is(base_model_dir: Path, tmp_path: Path) -> None:
    assert ensure_model_dir(base_model_dir, tmp_path / "unused-cache") == base_model_dir
    assert not (tmp_path / "unused-cache").exists()


def test_a_directory_without_config_json_is_refused_by_name(tmp_path: Path) -> None:
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()

    with pytest.raises(ProviderError, match=f"{not_a_model} is a directory without config.json"):
        ensure_model_dir(not_a_model, tmp_path / "cache")


def test_a_file_that_is_not_gguf_is_refused_by_name(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)

    with pytest.raises(ProviderError, match=f"{weights} is neither a model directory"):
        ensure_model_dir(weights, tmp_path / "cache")
    with pytest.raises(ProviderError, match="neither"):
        ensure_model_dir(tmp_path / "missing.gguf", tmp_path / "cache")


def test_gguf_cache_key_is_readable_and_tells_files_apart(tmp_path: Path) -> None:
    first = tmp_path / "a" / "My Model.Q4_K_M.gguf"
    second = tmp_path / "b" / "My Model.Q4_K_M.gguf"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"GGUF")

    assert gguf_cache_key(first).startswith("my-model-q4-k-m-")
    assert gguf_cache_key(first) == gguf_cache_key(first)
    assert gguf_cache_key(first) != gguf_cache_key(second)


def test_a_gguf_file_is_dequantized_once_into_the_cache(
    base_model_dir: Path, tmp_path: Path
) -> None:
    """The packaged SmolLM2 GGUF, converted through the general path, gives the same weights."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    source = gguf_path()

    converted = ensure_model_dir(source, cache)
    saved_at = (converted / "model.safetensors").stat().st_mtime_ns
    again = ensure_model_dir(source, cache)

    assert converted == again == cache / gguf_cache_key(source)
    assert (converted / "model.safetensors").stat().st_mtime_ns == saved_at
    assert not list(cache.glob(".*.tmp-*"))
    assert str(source.resolve()) in (converted / "ftportal_source.json").read_text()
    ours = load_file(str(converted / "model.safetensors"))
    default = load_file(str(base_model_dir / "model.safetensors"))
    assert ours.keys() == default.keys()
    assert all(torch.equal(ours[name], default[name]) for name in ours)
    model = AutoModelForCausalLM.from_pretrained(converted, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template
