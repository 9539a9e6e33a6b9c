"""Keeping validation held out: which side a derived example must take, which origins a lead
retired from validation, and which train and validation inputs match (exactly or nearly).

The freeze (services.dataset_version_freeze) calls these after drawing or carrying the split;
the evaluation's contamination warning reuses ``overlap_rows``. Reads only; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from .models import (
    Dataset,
    DatasetVersion,
    DatasetVersionExample,
    Example,
    Split,
    ValidationRetirement,
)
from .quality.overlap import Overlap, input_text, overlaps

# How many matching pairs a refusal, a page or a stored override lists; the count is always
# the full one.
MAX_LISTED_OVERLAPS = 200
INPUT_PREVIEW_CHARS = 200
# Where an origin's copies may not be trained on.
HELD_OUT_SPLITS = (Split.VALIDATION, Split.TEST)


@dataclass(frozen=True)
class Retirements:
    """Origins retired from validation, and the derived examples whose move retired them."""

    origins: frozenset[int]
    moved: frozenset[int]


def retirements_for(dataset: Dataset) -> Retirements:
    rows = list(
        ValidationRetirement.objects.filter(
            Q(derived__dataset=dataset) | Q(origin__dataset=dataset)
        ).values_list("origin_id", "derived_id")
    )
    return Retirements(
        origins=frozenset(origin for origin, _ in rows),
        moved=frozenset(derived for _, derived in rows),
    )


def latest_frozen_sides(example_ids: Sequence[int]) -> dict[int, str]:
    """Each example's side in the most recent version that froze it."""
    sides: dict[int, str] = {}
    rows = (
        DatasetVersionExample.objects.filter(example_id__in=example_ids)
        .order_by("version_id")
        .values_list("example_id", "split")
    )
    for example_id, split in rows:
        sides[example_id] = split  # later versions overwrite earlier ones
    return sides


def follow_origins(
    approved: Sequence[Example], splits: Sequence[Split], *, retired: Retirements
) -> list[Split]:
    """The split after derived examples have joined their origins.

    - A retired origin, and a derived example a lead moved to training, go to training.
    - Any other derived example takes its origin's side when the origin is in this version
      (following chains: a copy of a copy ends where the first origin is).
    - When the origin is not in this version (rejected since, or in another dataset), the
      derived example goes to validation if the origin was last frozen there or in a test
      set (a copy of a test item is never trained on), and otherwise keeps the side it was
      drawn into.
    """
    side = {example.pk: split for example, split in zip(approved, splits, strict=True)}
    origin_of = {e.pk: e.derived_from_id for e in approved if e.derived_from_id is not None}
    outside = latest_frozen_sides([o for o in origin_of.values() if o not in side])
    resolved: dict[int, Split] = {}

    def followed(pk: int) -> Split:
        if pk in resolved:
            return resolved[pk]
        origin = origin_of.get(pk)
        if pk in retired.moved or pk in retired.origins:
            result = Split.TRAIN
        elif origin is None:
            result = side[pk]
        elif origin in side:
            result = followed(origin)
        elif origin not in retired.origins and outside.get(origin) in HELD_OUT_SPLITS:
            result = Split.VALIDATION
        else:
            result = side[pk]
        resolved[pk] = result
        return result

    return [followed(example.pk) for example in approved]


def sides_free(approved: Sequence[Example], *, retired: Retirements) -> list[bool]:
    """Which examples :func:`follow_origins` leaves on the side they were drawn into, and may
    move without moving another: neither derived nor retired, and with no copy among
    ``approved`` (a copy follows its origin wherever it goes)."""
    origins = {e.derived_from_id for e in approved if e.derived_from_id is not None}
    return [
        example.derived_from_id is None
        and example.pk not in retired.origins
        and example.pk not in retired.moved
        and example.pk not in origins
        for example in approved
    ]


def newly_retired(
    approved: Sequence[Example],
    splits: Sequence[Split],
    *,
    retired: Retirements,
    latest: DatasetVersion | None,
) -> list[int]:
    """Retired origins that this freeze takes out of validation (they were held out in the
    latest version, and are now in training)."""
    if latest is None or not retired.origins:
        return []
    was_held_out = set(
        latest.items.filter(split=Split.VALIDATION, example_id__in=retired.origins).values_list(
            "example_id", flat=True
        )
    )
    return sorted(
        e.pk
        for e, split in zip(approved, splits, strict=True)
        if e.pk in was_held_out and split == Split.TRAIN
    )


def _preview(text: str) -> str:
    return text if len(text) <= INPUT_PREVIEW_CHARS else text[: INPUT_PREVIEW_CHARS - 1] + "…"


@dataclass(frozen=True)
class Side:
    """One of two sets compared: its name in the rows ("train", "test"), ids and inputs."""

    name: str
    ids: Sequence[int | None]
    inputs: Sequence[str]


def overlap_row(found: Overlap, *, left: Side, right: Side) -> dict[str, Any]:
    """One matching pair as plain data (for a page, an API answer and a stored record): each
    side's example id and input, the kind ("exact" or "near"), its label and the similarity."""
    return {
        f"{left.name}_example": left.ids[found.left],
        f"{left.name}_input": _preview(left.inputs[found.left]),
        f"{right.name}_example": right.ids[found.right],
        f"{right.name}_input": _preview(right.inputs[found.right]),
        "kind": found.kind,
        "kind_label": found.kind_label,
        "similarity": found.similarity,
    }


def cross_split_overlaps(
    approved: Sequence[Example], splits: Sequence[Split]
) -> list[dict[str, Any]]:
    """Train and validation examples of one freeze whose inputs match exactly or nearly."""
    train = [e for e, s in zip(approved, splits, strict=True) if s == Split.TRAIN]
    validation = [e for e, s in zip(approved, splits, strict=True) if s == Split.VALIDATION]
    left = Side("train", [e.pk for e in train], [input_text(e.messages) for e in train])
    right = Side(
        "validation", [e.pk for e in validation], [input_text(e.messages) for e in validation]
    )
    return [
        overlap_row(found, left=left, right=right) for found in overlaps(left.inputs, right.inputs)
    ]


@dataclass(frozen=True)
class ValidationShrink:
    """What moving a derived example to training does to the evaluation set: its origin leaves
    validation, and with it every copy that followed the origin there (this one included)."""

    origin_id: int
    version: DatasetVersion | None  # the latest version of the origin's dataset
    before: int  # items of that version still held out
    leaving: int  # the origin and its copies among them

    @property
    def after(self) -> int:
        return self.before - self.leaving

    @property
    def warning(self) -> str:
        if self.version is None or not self.leaving:
            return (
                f"Its origin, example {self.origin_id}, is not held out now; from now on it "
                "is not drawn into validation."
            )
        copies = self.leaving - 1
        also = f" with {copies} cop{'y' if copies == 1 else 'ies'} of it" if copies else ""
        return (
            f"Its origin, example {self.origin_id}, leaves validation{also}: the evaluation "
            f"set of {self.version.dataset.name} shrinks from {self.before} to {self.after} "
            f"items at the next freeze (v{self.version.number} holds out {self.before})."
        )


def with_copies(example_ids: set[int]) -> set[int]:
    """The examples and every example derived from them, directly or through other copies."""
    family = set(example_ids)
    frontier = set(example_ids)
    while frontier:
        frontier = (
            set(Example.objects.filter(derived_from_id__in=frontier).values_list("pk", flat=True))
            - family
        )
        family |= frontier
    return family


def validation_shrink(derived: Example) -> ValidationShrink:
    assert derived.derived_from_id is not None, "only a derived example has an origin"
    origin = Example.objects.select_related("dataset").get(pk=derived.derived_from_id)
    version = origin.dataset.versions.select_related("dataset").order_by("-number").first()
    if version is None:
        return ValidationShrink(origin.pk, None, 0, 0)
    held_out = set(
        version.items.filter(split=Split.VALIDATION, example__isnull=False).values_list(
            "example_id", flat=True
        )
    )
    # Origins retired earlier leave at the next freeze anyway, with their copies.
    held_out -= with_copies(set(retirements_for(origin.dataset).origins))
    leaving = held_out & with_copies({origin.pk})
    return ValidationShrink(
        origin_id=origin.pk, version=version, before=len(held_out), leaving=len(leaving)
    )


@dataclass(frozen=True)
class ExampleOrigin:
    """What a review card says about an example made from another one."""

    origin_id: int
    kind_label: str
    held_out_in: DatasetVersion | None  # latest version holding the origin out, if any
    retirement: ValidationRetirement | None


def example_origin(example: Example) -> ExampleOrigin | None:
    if example.derived_from_id is None:
        return None
    retirement = ValidationRetirement.objects.filter(derived=example).first()
    held_out_in = None
    if (
        retirement is None
        and not ValidationRetirement.objects.filter(origin_id=example.derived_from_id).exists()
    ):
        latest = (
            DatasetVersionExample.objects.filter(example_id=example.derived_from_id)
            .select_related("version")
            .order_by("-version_id")
            .first()
        )
        if latest is not None and latest.split in HELD_OUT_SPLITS:
            held_out_in = latest.version
    return ExampleOrigin(
        origin_id=example.derived_from_id,
        kind_label=example.get_origin_kind_display() or "another example",
        held_out_in=held_out_in,
        retirement=retirement,
    )
