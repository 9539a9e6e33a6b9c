"""Token statistics, training cost and the guide's readiness bands, per label too."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
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
# Labels with two examples or more that lack a validation (or a training) example: nothing
# measures them, or nothing teaches them, whatever the total.
BAND_INCOMPLETE_SPLIT = "incomplete_split"
# The guide's "insufficient data" pitfall ("too little data leads to memorization rather than
# generalization") applies to each label of a label-set contract, not only to the total: 500
# examples over 60 labels is 8 a label, and a label learned from a handful of examples is
# memorised. Below this many training examples a label counts as insufficient data (the
# few-shot classification benchmarks the issue cites start at about ten a label).
MIN_TRAINING_EXAMPLES_PER_LABEL = 10
# How many labels a sentence names before "and N more"; the report's table lists them all.
LABELS_NAMED = 10
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


def label_readiness(labels: Sequence[str], splits: Sequence[str]) -> dict[str, Any] | None:
    """Each label's training and validation examples (one label and side per frozen item),
    and the labels the guide's advice flags: under :data:`MIN_TRAINING_EXAMPLES_PER_LABEL`
    training examples, a single example (kept in training by the split), or two examples or
    more with a side of the split empty. None when no item is on either side (a test set)."""
    training = Counter(label for label, side in zip(labels, splits, strict=True) if side == "train")
    validation = Counter(
        label for label, side in zip(labels, splits, strict=True) if side == "validation"
    )
    names = sorted(set(training) | set(validation), key=lambda label: (training[label], label))
    if not names:
        return None
    counts: list[dict[str, Any]] = [
        {"label": label, "train": training[label], "validation": validation[label]}
        for label in names
    ]
    examples = sum(training.values()) + sum(validation.values())
    return {
        "labels": len(names),
        "threshold": MIN_TRAINING_EXAMPLES_PER_LABEL,
        "mean_training_examples": round(sum(training.values()) / len(names), 1),
        "validation_share": round(sum(validation.values()) / examples, 4),
        # Fewest training examples first, so the labels that need examples lead.
        "counts": counts,
        "below_threshold": [
            row for row in counts if row["train"] < MIN_TRAINING_EXAMPLES_PER_LABEL
        ],
        "single_example": [row["label"] for row in counts if row["train"] + row["validation"] == 1],
        "without_validation": [
            row["label"] for row in counts if row["train"] > 1 and not row["validation"]
        ],
        "without_training": [row["label"] for row in counts if not row["train"]],
    }


def named_labels(labels: Sequence[str]) -> str:
    """Labels as a sentence names them: the first :data:`LABELS_NAMED`, quoted, then how many
    more."""
    shown = ", ".join(repr(label) for label in labels[:LABELS_NAMED])
    more = len(labels) - LABELS_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def readiness_verdict(count: int, per_label: dict[str, Any] | None) -> dict[str, str]:
    """The report's band: the total against the guide's bands (:func:`readiness_band`), and,
    under a label-set contract, never better than "insufficient data" while some label has
    fewer than :data:`MIN_TRAINING_EXAMPLES_PER_LABEL` training examples, nor than an
    incomplete split while some label lacks a side of it."""
    verdict = readiness_band(count)
    if not per_label:
        return verdict
    below = [row["label"] for row in per_label["below_threshold"]]
    lacking = per_label["without_validation"] + per_label["without_training"]
    problems = []
    if below:
        problems.append(
            f"{len(below)} of {per_label['labels']} labels have fewer than "
            f"{per_label['threshold']} training examples ({named_labels(below)}); the "
            "guide's insufficient data applies to each label: one learned from a handful of "
            "examples is memorised, not generalised. Add examples of these labels."
        )
    if per_label["without_validation"]:
        problems.append(
            f"{len(per_label['without_validation'])} labels have no validation example "
            f"({named_labels(per_label['without_validation'])}), so no evaluation on this "
            "version measures them; freeze with re-split to draw the split per label."
        )
    if per_label["without_training"]:
        problems.append(
            f"{len(per_label['without_training'])} labels have no training example "
            f"({named_labels(per_label['without_training'])}), so the model never sees them."
        )
    if per_label["single_example"]:
        problems.append(
            f"{len(per_label['single_example'])} labels have a single example, kept in "
            f"training ({named_labels(per_label['single_example'])})."
        )
    if not (below or lacking):
        return verdict
    if below:
        return {
            "band": BAND_INSUFFICIENT,
            "label": "insufficient data per label",
            "advice": " ".join(problems),
        }
    return {
        "band": BAND_INCOMPLETE_SPLIT,
        "label": "labels missing from a side of the split",
        "advice": " ".join(problems),
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
