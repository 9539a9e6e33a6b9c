"""Where the local provider runs and what it loads: the device, the dtype it trains in, and a
base model and its tokenizer from a directory of weights."""

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


def training_dtype(device: str) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs are slow or inexact in bf16, so stay in fp32.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_base_model(base_model_dir: Path, device: str) -> PreTrainedModel:
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=training_dtype(device), local_files_only=True
    )
    return model.to(device)  # type: ignore[arg-type]


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_dir, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
