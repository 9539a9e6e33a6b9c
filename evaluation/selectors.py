"""Reads for evaluation: per-example outputs side by side."""

from __future__ import annotations

from dataclasses import dataclass

from .models import Candidate, EvalResult, EvalRun


@dataclass(frozen=True)
class SideBySideRow:
    position: int
    prompt: list[dict[str, str]]
    reference: str
    results: list[EvalResult | None]


def side_by_side(run: EvalRun) -> tuple[list[Candidate], list[SideBySideRow]]:
    candidates = list(run.candidates.all())
    results = EvalResult.objects.filter(candidate__run=run).select_related("item")
    by_item: dict[int, dict[int, EvalResult]] = {}
    items = {}
    for result in results:
        by_item.setdefault(result.item_id, {})[result.candidate_id] = result
        items[result.item_id] = result.item
    rows = [
        SideBySideRow(
            position=item.position,
            prompt=item.messages[:-1],
            reference=item.messages[-1]["content"],
            results=[by_item[item_id].get(c.pk) for c in candidates],
        )
        for item_id, item in sorted(items.items(), key=lambda pair: pair[1].position)
    ]
    return candidates, rows
