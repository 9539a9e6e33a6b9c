"""Contamination: test items of an evaluation that also appear, exactly or nearly, in the
training split a fine-tuned candidate learned from. A score on such items measures memory, not
skill, so the evaluation page and API warn with the count and the pairs. The test items are the
run's: a version's validation split, or every item of a held-out version (a test set's included,
evaluated whole), so a test set is checked like any held-out set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets.held_out import MAX_LISTED_OVERLAPS, Side, overlap_row
from datasets.models import DatasetVersion, Split
from datasets.quality.overlap import input_text, overlaps

from .models import Candidate, EvalRun
from .runner import test_items


@dataclass(frozen=True)
class Contamination:
    """The test items found in one training version, and which candidates learned from it."""

    training_version: DatasetVersion
    candidates: list[str]
    item_count: int  # test items with at least one match
    test_count: int
    pair_count: int
    pairs: list[dict[str, Any]]  # the first MAX_LISTED_OVERLAPS


def training_version_of(candidate: Candidate) -> DatasetVersion | None:
    """The dataset version whose training split a candidate was fine-tuned on, if any."""
    if candidate.model_version is not None:
        return candidate.model_version.dataset_version
    if candidate.checkpoint is not None:
        return candidate.checkpoint.job.dataset_version
    return None


def run_contamination(run: EvalRun) -> list[Contamination]:
    """One entry per training version with overlapping items (none when the run is clean)."""
    learned_from: dict[int, tuple[DatasetVersion, list[str]]] = {}
    candidates = run.candidates.select_related(
        "model_version__dataset_version__dataset", "checkpoint__job__dataset_version__dataset"
    )
    for candidate in candidates:
        version = training_version_of(candidate)
        if version is not None:
            learned_from.setdefault(version.pk, (version, []))[1].append(candidate.label)
    if not learned_from:
        return []
    items = test_items(run)
    test = Side("test", [i.example_id for i in items], [input_text(i.messages) for i in items])
    found = []
    for version, labels in learned_from.values():
        train = list(version.items.filter(split=Split.TRAIN).order_by("position"))
        training = Side(
            "training", [t.example_id for t in train], [input_text(t.messages) for t in train]
        )
        matches = overlaps(training.inputs, test.inputs)
        if matches:
            found.append(
                Contamination(
                    training_version=version,
                    candidates=labels,
                    item_count=len({m.right for m in matches}),
                    test_count=len(items),
                    pair_count=len(matches),
                    pairs=[
                        {
                            **overlap_row(m, left=training, right=test),
                            "test_position": items[m.right].position,
                        }
                        for m in matches[:MAX_LISTED_OVERLAPS]
                    ],
                )
            )
    return found
