"""Token statistics, training cost and the guide's readiness bands."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np

from .findings import ERROR, KIND_LABELS, Issue
from .tokens import ConversationTokens

DEFAULT_EPOCHS = 3  # the guide: 3 to 5 epochs; providers default to 3

# The guide: "Start with 100 to 500 high-quality examples."
INSUFFICIENT_BELOW = 100
RECOMMENDED_MAX = 500
BAND_INSUFFICIENT = "insufficient"
BAND_RECOMMENDED = "recommended_start"
BAND_FINE = "fine"
NO_PRICE_NOTE = "local: no per-token price"
# What "tokens per epoch" counts, said next to the number on every page (see
# datasets.quality.services.version_tokens_per_epoch).
TOKENS_PER_EPOCH_MEANS = "training split, prompt and answer"


def distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0, "mean": 0.0, "p95": 0.0, "max": 0}
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": int(values.max()),
    }


def token_stats(
    tokens: ConversationTokens,
    *,
    tokenizer: str,
    epochs: int = DEFAULT_EPOCHS,
    usd_per_million_tokens: Decimal | None = None,
) -> dict[str, Any]:
    """Min, mean, p95 and max of prompt and answer tokens; tokens per epoch; cost."""
    return {
        "tokenizer": tokenizer,
        "examples": len(tokens.total),
        "prompt_tokens": distribution(tokens.prompt),
        "answer_tokens": distribution(tokens.answer),
        "total_tokens": distribution(tokens.total),
        **epoch_totals(
            int(tokens.total.sum()), epochs=epochs, usd_per_million_tokens=usd_per_million_tokens
        ),
    }


def epoch_totals(
    per_epoch: int, *, epochs: int = DEFAULT_EPOCHS, usd_per_million_tokens: Decimal | None = None
) -> dict[str, Any]:
    """Tokens per epoch, over all epochs, and what they cost at the given price."""
    training_tokens = per_epoch * epochs
    cost = (
        float(Decimal(training_tokens) * usd_per_million_tokens / Decimal(1_000_000))
        if usd_per_million_tokens is not None
        else None
    )
    return {
        "tokens_per_epoch": per_epoch,
        "epochs": epochs,
        "training_tokens": training_tokens,
        "usd_per_million_tokens": (
            float(usd_per_million_tokens) if usd_per_million_tokens is not None else None
        ),
        "cost_usd": round(cost, 4) if cost is not None else None,
        "cost_note": (
            f"{training_tokens:,} tokens x ${usd_per_million_tokens}/M"
            if usd_per_million_tokens is not None
            else NO_PRICE_NOTE
        ),
    }


def readiness_band(count: int) -> dict[str, str]:
    """Where an example count sits against the guide's advice, in the guide's words."""
    if count < INSUFFICIENT_BELOW:
        return {
            "band": BAND_INSUFFICIENT,
            "label": "insufficient data",
            "advice": f"Fewer than {INSUFFICIENT_BELOW} examples: too little data leads to "
            "memorization rather than generalization. Add and review more examples.",
        }
    if count <= RECOMMENDED_MAX:
        return {
            "band": BAND_RECOMMENDED,
            "label": "the recommended start",
            "advice": f"{INSUFFICIENT_BELOW} to {RECOMMENDED_MAX} high-quality examples: the "
            "recommended start. Quality matters more than quantity.",
        }
    return {
        "band": BAND_FINE,
        "label": "more than the recommended start",
        "advice": f"More than {RECOMMENDED_MAX} examples: fine. More data helps, but quality "
        "matters more than quantity.",
    }


def kind_counts(issues: Iterable[Issue]) -> dict[str, dict[str, Any]]:
    """For each kind: how many distinct examples have it, and its worst severity."""
    examples: dict[str, set[int]] = defaultdict(set)
    severity: dict[str, str] = {}
    for issue in issues:
        examples[issue.kind].add(issue.index)
        if severity.get(issue.kind) != ERROR:
            severity[issue.kind] = issue.severity
    return {
        kind: {
            "examples": len(examples[kind]),
            "severity": severity[kind],
            "label": KIND_LABELS.get(kind, kind),
        }
        for kind in sorted(examples, key=lambda k: (severity[k] != ERROR, k))
    }


def tokens_per_epoch_text(per_epoch: int) -> str:
    """The tokens-per-epoch count as every page words it."""
    return f"{per_epoch:,} tokens per epoch ({TOKENS_PER_EPOCH_MEANS})"
