"""Where the local provider runs and what it loads: the device, the dtype it generates in, and
a base model and its tokenizer from a directory of weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from providers.base import ProviderError


def pick_device(requested: str | None) -> str:
    if requested is not None:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


GENERATION_PRECISION_SETTING = "FTPORTAL_LOCAL_GENERATION_PRECISION"


def generation_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs, where it halves memory and is fast. On CPUs fp32, whose greedy replies are
    the same batched or alone; bf16 there decodes about 1.6x faster on a CPU with AMX but gives
    other replies to some prompts (bench/generation.py), so it is chosen by setting
    FTPORTAL_LOCAL_GENERATION_PRECISION to bf16 (or fp32 on a GPU). Training measures its own
    choice (precision.py)."""
    value = os.environ.get(GENERATION_PRECISION_SETTING, "").strip().lower()
    if value == "bf16":
        return torch.bfloat16
    if value == "fp32":
        return torch.float32
    if value not in ("", "default"):
        raise ProviderError(
            f"{GENERATION_PRECISION_SETTING} must be default, fp32 or bf16, not {value!r}"
        )
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
