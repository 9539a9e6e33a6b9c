"""Where the local provider runs and what it loads: the device, the dtype it generates in, and
a base model and its tokenizer from a directory of weights."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


def pick_device(requested: str | None) -> str:
    if requested is not None:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def generation_dtype(device: str) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs. On CPUs generation stays in fp32, whose greedy
    # replies match the reference path's; training measures its own choice (precision.py).
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_base_model(
    base_model_dir: Path,
    device: str,
    *,
    dtype: torch.dtype | None = None,
    attention: str | None = None,
) -> PreTrainedModel:
    """The model in this dtype (generation_dtype's by default) with this attention kernel
    (transformers' default when None)."""
    options = {"attn_implementation": attention} if attention is not None else {}
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        base_model_dir,
        dtype=dtype or generation_dtype(device),
        local_files_only=True,
        **options,
    )
    return model.to(device)  # type: ignore[arg-type]


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_dir, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
