"""One analysis pass: validation, token counts, and every quality analyzer, on plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from . import analyzers
from .findings import ERROR, Issue
from .stats import DEFAULT_EPOCHS, kind_counts, token_stats
from .tokens import TokenCounter, count_conversations
from .validation import validate_conversations


@dataclass(frozen=True)
class AnalysisResult:
    issues: list[Issue]
    stats: dict[str, Any]


def analyze_conversations(
    conversations: Sequence[object],
    *,
    counter: TokenCounter,
    context_window: int | None = None,
    strict_alternation: bool = False,
    names: Sequence[str] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    usd_per_million_tokens: Decimal | None = None,
    contract: dict[str, Any] | None = None,
) -> AnalysisResult:
    names = names if names is not None else [f"#{i}" for i in range(len(conversations))]
    tokens = count_conversations(conversations, counter)
    issues = validate_conversations(
        conversations,
        strict_alternation=strict_alternation,
        total_tokens=tokens.total,
        context_window=context_window,
    )
    parts = analyzers.split_parts(conversations)
    signatures = analyzers.conversation_signatures(parts)
    issues += analyzers.exact_duplicates(parts, names)
    near, near_pairs = analyzers.near_duplicates(parts, signatures, names)
    issues += near
    issues += analyzers.conflicting_answers(parts, signatures, names)
    has_answer = np.fromiter(
        (bool(a.strip()) for a in parts.answers), dtype=bool, count=len(parts.answers)
    )
    issues += analyzers.length_outliers(tokens.answer, has_answer)
    issues += analyzers.short_answers(parts.answers, tokens.answer, has_answer)
    issues += analyzers.personal_data(conversations)
    issues += analyzers.leftover_markup(conversations)
    issues += analyzers.contract_violations(parts, has_answer, contract or {})
    stats = token_stats(
        tokens, tokenizer=counter.name, epochs=epochs, usd_per_million_tokens=usd_per_million_tokens
    )
    stats["findings"] = kind_counts(issues)
    stats["near_duplicate_pairs"] = near_pairs
    stats["examples_with_errors"] = len({i.index for i in issues if i.severity == ERROR})
    stats["examples_with_findings"] = len({i.index for i in issues})
    stats["context_window"] = context_window
    return AnalysisResult(issues=issues, stats=stats)
