"""Held-out test sets (``DatasetVersion.is_test_set``): never trained on, and checked for the
inputs they share, exactly or nearly, with every training version of their project.

A test set's overlap is stored on it (``DatasetVersion.test_overlaps``)::

    {"checked_at": "<ISO time>",
     "versions": [{"version": id, "exact": n, "near": n, "test_items": n, "pair_count": n,
                   "pairs": [<held_out.overlap_row of a training and a test item>, ...]}]}

one entry per training (non-test) version, overlapping or not, with the first
``MAX_LISTED_OVERLAPS`` pairs listed and the counts always whole. It is computed in full when the
test set is frozen, and each training version frozen later adds (or replaces) its own entry on
every test set of the project, in the freeze's transaction.

How long it takes, measured on this shared 2-core machine (bench/test_set_overlap.py): a
5,000-item test set against one 5,000-item training version takes about 1.2 s, 0.4 s of it
reading the rows from Postgres, beside some 3.5 s for the rest of that freeze; against five
training versions of 5,000 to 6,200 items, 2.5 s. That is a fifth to a half of a freeze, so it
runs in the freeze (the version is never seen unchecked) rather than on the worker. Every
distinct training input is compared once, whatever the number of versions holding it
(versions of one dataset share most of their inputs); reading grows with the project's
training rows.

Exact and near matches are those of ``quality.overlap.overlaps`` over ``input_text`` (the user
turns), the same rule as the freeze's train/validation check and evaluation's contamination
check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ftportal.errors import ApplicationError

from .held_out import MAX_LISTED_OVERLAPS, Side, overlap_row
from .models import DatasetVersion, DatasetVersionExample
from .quality.overlap import EXACT, input_text, normalized, overlaps

TRAINING_SIDE = "training"
TEST_SIDE = "test"


# --- never trained on ------------------------------------------------------------------------


def training_refusal(version: DatasetVersion) -> str | None:
    """Why ``version`` may not be trained on, in words for the person asking; None when it
    may. Training's launch raises it naming the field; the runners refuse with it too."""
    if not version.is_test_set:
        return None
    return (
        f"{version} is a held-out test set: it is never trained on, so that its scores stay "
        "honest. Train on a training version of the project and evaluate on this one."
    )


def training_versions_of_project(project_id: int) -> QuerySet[DatasetVersion]:
    """The project's versions that may be trained on (every version but the test sets)."""
    return DatasetVersion.objects.filter(dataset__project_id=project_id, is_test_set=False)


def project_test_sets(project_id: int) -> QuerySet[DatasetVersion]:
    """The project's test sets, newest first, with their dataset."""
    return (
        DatasetVersion.objects.filter(dataset__project_id=project_id, is_test_set=True)
        .select_related("dataset")
        .order_by("-created_at", "-pk")
    )


# --- overlap with the training versions --------------------------------------------------------


@dataclass
class _TrainingInputs:
    """Every training item of the versions compared (``side``, with each item's version,
    position and split beside it), and its distinct inputs: an input held by several versions,
    or several times by one, is compared once."""

    side: Side
    version_ids: list[int]
    positions: list[int]
    splits: list[str]
    distinct: list[str]  # one text per distinct normalized input
    holders: list[list[int]]  # per distinct input, the items (indexes into side) holding it


def _training_inputs(version_ids: Iterable[int]) -> _TrainingInputs:
    rows = (
        DatasetVersionExample.objects.filter(version_id__in=list(version_ids))
        .order_by("version_id", "position")
        .values_list("version_id", "position", "example_id", "split", "messages")
        .iterator(chunk_size=2000)
    )
    ids: list[int | None] = []
    inputs: list[str] = []
    found = _TrainingInputs(Side(TRAINING_SIDE, ids, inputs), [], [], [], [], [])
    index_of: dict[str, int] = {}
    for version_id, position, example_id, split, messages in rows:
        text = input_text(messages)
        key = normalized(text)
        if key not in index_of:
            index_of[key] = len(found.distinct)
            found.distinct.append(text)
            found.holders.append([])
        found.holders[index_of[key]].append(len(ids))
        ids.append(example_id)
        inputs.append(text)
        found.version_ids.append(version_id)
        found.positions.append(position)
        found.splits.append(split)
    return found


def _test_side(test_set: DatasetVersion) -> tuple[Side, list[int]]:
    rows = list(
        test_set.items.order_by("position").values_list("position", "example_id", "messages")
    )
    side = Side(
        TEST_SIDE, [example_id for _, example_id, _ in rows], [input_text(m) for *_, m in rows]
    )
    return side, [position for position, _, _ in rows]


def _entry(version_id: int, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    pairs.sort(key=lambda p: (p["kind"] != EXACT, p["training_position"], p["test_position"]))
    exact = sum(1 for p in pairs if p["kind"] == EXACT)
    return {
        "version": version_id,
        "exact": exact,
        "near": len(pairs) - exact,
        "test_items": len({p["test_position"] for p in pairs}),
        "pair_count": len(pairs),
        "pairs": pairs[:MAX_LISTED_OVERLAPS],
    }


def overlaps_with_training_versions(
    test_set: DatasetVersion, training_version_ids: list[int]
) -> list[dict[str, Any]]:
    """The test set's overlap with each training version, one entry per version (in the order
    given), as stored in ``test_overlaps["versions"]``."""
    test, test_positions = _test_side(test_set)
    training = _training_inputs(training_version_ids)
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for match in overlaps(training.distinct, test.inputs):
        for item in training.holders[match.left]:
            row = overlap_row(replace(match, left=item), left=training.side, right=test)
            row.update(
                training_position=training.positions[item],
                training_split=training.splits[item],
                test_position=test_positions[match.right],
            )
            found[training.version_ids[item]].append(row)
    return [_entry(version_id, found[version_id]) for version_id in training_version_ids]


def overlaps_record(*, test_set: DatasetVersion) -> DatasetVersion:
    """Check the test set against every training version of its project, now, and store it."""
    assert test_set.is_test_set, "only a test set is checked against the training versions"
    version_ids = list(
        training_versions_of_project(test_set.dataset.project_id)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )
    test_set.test_overlaps = {
        "checked_at": timezone.now().isoformat(),
        "versions": overlaps_with_training_versions(test_set, version_ids),
    }
    test_set.save(update_fields=["test_overlaps"])
    return test_set


def overlaps_check(*, test_set: DatasetVersion) -> DatasetVersion:
    """Check a test set again, on request (a training version frozen while the test set's own
    freeze ran is not in its check). Locked, so a training freeze's entry is not lost."""
    if not test_set.is_test_set:
        raise ApplicationError(
            f"{test_set} is not a test set; only a test set is checked against the training "
            "versions.",
            extra={"field": "version"},
        )
    with transaction.atomic():
        locked = DatasetVersion.objects.select_for_update().get(pk=test_set.pk)
        return overlaps_record(test_set=locked)


def _training_version_checked(test_set: DatasetVersion, training: DatasetVersion) -> None:
    entry = overlaps_with_training_versions(test_set, [training.pk])[0]
    kept = [e for e in test_set.test_overlaps.get("versions", []) if e["version"] != training.pk]
    test_set.test_overlaps = {"checked_at": timezone.now().isoformat(), "versions": [*kept, entry]}
    test_set.save(update_fields=["test_overlaps"])


def overlaps_after_freeze(version: DatasetVersion) -> None:
    """What a freeze owes the test sets: a new test set is checked against every training
    version; a new training version is checked against every test set of the project (each
    locked, in id order, so two training freezes in other datasets cannot lose each other's
    entry, nor deadlock)."""
    if version.is_test_set:
        overlaps_record(test_set=version)
        return
    test_sets = (
        DatasetVersion.objects.select_for_update()
        .filter(dataset__project_id=version.dataset.project_id, is_test_set=True)
        .order_by("pk")
    )
    for test_set in test_sets:
        _training_version_checked(test_set, version)


# --- what the pages and the API read ------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOverlap:
    """One training version's entry of a test set's stored check, with the version."""

    training_version: DatasetVersion | None  # None when it is gone since the check
    exact: int
    near: int
    test_items: int
    pair_count: int
    pairs: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return self.exact + self.near


def stored_overlaps(test_set: DatasetVersion) -> list[TrainingOverlap]:
    """The stored check, overlapping training versions first (most pairs first)."""
    entries = test_set.test_overlaps.get("versions", [])
    versions = DatasetVersion.objects.select_related("dataset").in_bulk(
        [e["version"] for e in entries]
    )
    rows = [
        TrainingOverlap(
            training_version=versions.get(e["version"]),
            exact=e["exact"],
            near=e["near"],
            test_items=e["test_items"],
            pair_count=e["pair_count"],
            pairs=e["pairs"],
        )
        for e in entries
    ]
    return sorted(rows, key=lambda r: -r.total)


def unchecked_training_versions(test_set: DatasetVersion) -> list[DatasetVersion]:
    """Training versions of the project that the stored check does not cover (none, unless a
    training version was frozen while the test set's own freeze was in progress)."""
    checked = {e["version"] for e in test_set.test_overlaps.get("versions", [])}
    return [
        v
        for v in training_versions_of_project(test_set.dataset.project_id)
        .select_related("dataset")
        .order_by("created_at", "pk")
        if v.pk not in checked
    ]


@dataclass(frozen=True)
class OverlappingTestSet:
    """A test set that shares inputs with a training version, as the training version's page
    says it."""

    test_set: DatasetVersion
    exact: int
    near: int
    test_items: int


def overlapping_test_sets(training_version: DatasetVersion) -> list[OverlappingTestSet]:
    """The project's test sets whose stored check found inputs shared with this version."""
    found = []
    for test_set in project_test_sets(training_version.dataset.project_id).filter(
        test_overlaps__versions__contains=[{"version": training_version.pk}]
    ):
        for entry in test_set.test_overlaps["versions"]:
            if entry["version"] == training_version.pk and entry["exact"] + entry["near"]:
                found.append(
                    OverlappingTestSet(test_set, entry["exact"], entry["near"], entry["test_items"])
                )
    return found
