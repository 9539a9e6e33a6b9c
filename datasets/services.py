"""Writes for the datasets app: datasets, review, freeze (imports live in imports/services.py)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max

from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from ftportal.state import state_change, state_set

from .contracts import ContractCheck, clean_contract, derived_label_set
from .held_out import (
    MAX_LISTED_OVERLAPS,
    Retirements,
    ValidationShrink,
    cross_split_overlaps,
    follow_origins,
    newly_retired,
    retirements_for,
    sides_free,
    validation_shrink,
)
from .models import (
    EXAMPLE_TRANSITIONS,
    Dataset,
    DatasetVersion,
    DatasetVersionExample,
    Example,
    ExampleStatus,
    OriginKind,
    ReviewAction,
    ReviewDecision,
    Split,
    ValidationRetirement,
)
from .quality.overlap import EXACT
from .quality.stats import label_readiness
from .splits import (
    answer_labels,
    label_stratified_assignment,
    labels_on_both_sides,
    seeded_rank,
    validation_target,
)
from .test_sets import overlaps_after_freeze

MIN_VALIDATION_FRACTION = 0.10
MAX_VALIDATION_FRACTION = 0.20
DEFAULT_VALIDATION_FRACTION = 0.15


MAX_SEED = 2**31 - 1


def dataset_create(*, project: Project, name: str, description: str = "") -> Dataset:
    name = name.strip()
    if not name:
        raise ApplicationError("name: a dataset needs a name.", extra={"field": "name"})
    try:
        # The unique constraint decides, so two requests racing for one name cannot both win;
        # the savepoint keeps an outer transaction usable after the IntegrityError.
        with transaction.atomic():
            return Dataset.objects.create(project=project, name=name, description=description)
    except IntegrityError:
        raise ConflictError(
            f"A dataset named '{name}' already exists in this project.", extra={"field": "name"}
        )


def dataset_contract_set(*, dataset: Dataset, contract: object) -> Dataset:
    """Declare (or with ``{}`` clear) what a right answer looks like in this dataset.

    Examples already stored are kept as they are; those that break the new contract show up as
    findings on the review card, in the quality and readiness reports and at freeze.
    """
    dataset.answer_contract = clean_contract(contract)
    dataset.save(update_fields=["answer_contract"])
    return dataset


def dataset_quality_target_set(*, dataset: Dataset, quality_target: float | None) -> Dataset:
    """Set (or with None clear) the score a model must reach on the metric an evaluation
    decides on to be good enough for this dataset's task at all, from above 0 to 1 (0.8 is
    80 % exact match, say). The advisor checks the best candidate against it, so it can say
    that neither fine-tuning nor prompting is good enough."""
    if quality_target is not None and (
        isinstance(quality_target, bool)
        or not isinstance(quality_target, int | float)
        or not math.isfinite(quality_target)
        or not 0 < quality_target <= 1
    ):
        raise ApplicationError(
            f"quality_target: a score above 0 and at most 1 (0.8 for 80 %), or none to clear "
            f"it; got {quality_target!r}.",
            extra={"field": "quality_target"},
        )
    dataset.quality_target = None if quality_target is None else float(quality_target)
    dataset.save(update_fields=["quality_target"])
    return dataset


def approved_label_counts(*, dataset: Dataset) -> tuple[dict[str, object], list[tuple[str, int]]]:
    """A label-set contract derived from the approved answers, with each label's count, for
    the lead to look at before setting it (nothing is saved here)."""
    messages = Example.objects.filter(dataset=dataset, status=ExampleStatus.APPROVED).values_list(
        "messages", flat=True
    )
    return derived_label_set(assistant_answer(m) for m in messages)


def assistant_answer(messages: list[dict[str, str]]) -> str:
    """The answer under review: the content of the final assistant message."""
    return messages[-1]["content"] if messages else ""


def example_transition(
    example: Example, target: ExampleStatus, *, save: bool = True, **changes: object
) -> None:
    """Move an example to ``target`` if EXAMPLE_TRANSITIONS allows it, with the other field
    changes. A status change makes every open view of the example stale, so its revision goes
    up. Saved at once, only the changed columns and updated_at (which auto_now sets on save);
    with ``save=False`` the caller writes it, with others, in one bulk update."""
    moved = {"revision": example.revision + 1, **changes}
    if save:
        state_change(
            example,
            kind="example",
            target=target,
            allowed=EXAMPLE_TRANSITIONS,
            changes=moved,
            update_fields=["updated_at"],
        )
    else:
        state_set(
            example, kind="example", target=target, allowed=EXAMPLE_TRANSITIONS, changes=moved
        )


def _stale_review(example: Example) -> ConflictError:
    latest = example.decisions.select_related("reviewer").order_by("-id").first()
    who = (
        f"{latest.reviewer.get_username()} ({latest.get_action_display().lower()})"
        if latest
        else "someone"
    )
    answer = assistant_answer(example.messages)
    return ConflictError(
        f"Example {example.pk} was changed by {who} while you had it open; nothing was saved. "
        f"It is now {example.get_status_display().lower()} with the answer: {answer}",
        extra={
            "field": "revision",
            "current_revision": example.revision,
            "current_status": example.status,
            "current_answer": answer,
        },
    )


def example_review(
    *,
    example: Example,
    user: User,
    action: ReviewAction,
    new_answer: str | None = None,
    comment: str = "",
    expected_revision: int | None = None,
) -> Example:
    """Apply one review decision and keep it in the append-only decision log.

    With ``expected_revision`` (the revision the reviewer was shown), a decision made on a stale
    view is refused with the other reviewer's change instead of silently replacing it.
    """
    target = {
        ReviewAction.APPROVE: ExampleStatus.APPROVED,
        ReviewAction.EDIT: ExampleStatus.APPROVED,
        ReviewAction.REJECT: ExampleStatus.REJECTED,
        ReviewAction.REOPEN: ExampleStatus.PENDING,
    }[action]
    with transaction.atomic():
        example = Example.objects.select_for_update().get(pk=example.pk)
        if expected_revision is not None and example.revision != expected_revision:
            raise _stale_review(example)
        previous = assistant_answer(example.messages)
        if action == ReviewAction.EDIT:
            # An edit approves, which every status allows: the answer is checked first.
            edited = (new_answer or "").strip()
            if not edited:
                raise ApplicationError("The edited answer is empty; write an answer or reject.")
            messages = [dict(m) for m in example.messages]
            messages[-1]["content"] = edited
            example_transition(example, target, messages=messages)
        else:
            # Only an edit changes the messages; not rewriting them keeps approve and reject cheap.
            example_transition(example, target)
        ReviewDecision.objects.create(
            example=example,
            reviewer=user,
            action=action,
            previous_answer=previous,
            new_answer=assistant_answer(example.messages),
            comment=comment,
        )
    return example


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(message_lists: list[list[dict[str, str]]]) -> str:
    """Order-independent hash of the examples' content: same examples, same hash."""
    digests = sorted(hashlib.sha256(canonical_json(m).encode()).hexdigest() for m in message_lists)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def split_assignment(count: int, *, seed: int, validation_fraction: float) -> list[Split]:
    """Seeded split: the same count, seed and fraction always give the same assignment."""
    indices = list(range(count))
    random.Random(seed).shuffle(indices)
    validation = set(indices[: validation_target(count, validation_fraction)])
    return [Split.VALIDATION if i in validation else Split.TRAIN for i in range(count)]


def carried_split_assignment(
    example_ids: list[int],
    *,
    previous: dict[int, str],
    seed: int,
    validation_fraction: float,
    labels: list[str] | None = None,
) -> list[Split]:
    """Keep each example on the side of the split it had before; place only new examples.

    New examples go to validation, in a seeded order, until validation reaches its target share
    of the whole version, so the held-out set never leaks into training from one version to the
    next (which would make the next evaluation look better than it is). With ``labels`` (one
    per example, under a label-set contract) the new examples are placed per label, labels
    missing from either side first (splits.label_stratified_assignment).
    """
    if labels is not None:
        return label_stratified_assignment(
            example_ids,
            labels,
            previous=previous,
            seed=seed,
            validation_fraction=validation_fraction,
        )
    kept_validation = sum(1 for i in example_ids if previous.get(i) == Split.VALIDATION)
    new_ids = sorted(
        (i for i in example_ids if i not in previous), key=lambda i: seeded_rank(seed, i)
    )
    wanted = validation_target(len(example_ids), validation_fraction) - kept_validation
    new_validation = set(new_ids[: max(0, wanted)])
    return [
        Split(previous[i])
        if i in previous
        else Split.VALIDATION
        if i in new_validation
        else Split.TRAIN
        for i in example_ids
    ]


def _splits_for(
    approved: list[Example],
    previous: DatasetVersion | None,
    *,
    contract: dict[str, Any],
    retired: Retirements,
    seed: int,
    validation_fraction: float,
) -> list[Split]:
    """The split of a training freeze: the seeded draw (per label under a label-set contract,
    keeping the sides of ``previous`` when given), then derived examples joining their origins
    (held_out.follow_origins), then each label that lost a side there given one back where an
    example is free to move."""
    labels = answer_labels(contract, (assistant_answer(e.messages) for e in approved))
    earlier: dict[int, str] = (
        {}
        if previous is None
        else dict(previous.items.filter(example__isnull=False).values_list("example_id", "split"))
    )
    if previous is None and labels is None:
        drawn = split_assignment(len(approved), seed=seed, validation_fraction=validation_fraction)
    else:
        drawn = carried_split_assignment(
            [e.pk for e in approved],
            previous=earlier,
            seed=seed,
            validation_fraction=validation_fraction,
            labels=labels,
        )
    if labels is not None and Split.VALIDATION not in drawn and previous is None:
        raise ApplicationError(
            f"Each of the {len(set(labels))} labels has a single approved example, and a "
            "label with one example stays in training, so nothing is left to validate on; "
            "approve a second example of some labels first.",
            extra={"field": "validation_fraction"},
        )
    followed = follow_origins(approved, drawn, retired=retired)
    if labels is None:
        return followed
    free = sides_free(approved, retired=retired)
    movable = [is_free and e.pk not in earlier for e, is_free in zip(approved, free, strict=True)]
    return labels_on_both_sides(labels, followed, movable=movable)


def split_readiness(
    approved: list[Example], splits: list[Split], contract: dict[str, Any]
) -> dict[str, Any]:
    """What a freeze stores as the start of its version's readiness report: each label's
    training and validation examples under a label-set contract (quality.stats), else
    nothing. The full report is computed from the frozen items when first asked for."""
    labels = answer_labels(contract, (assistant_answer(e.messages) for e in approved))
    per_label = label_readiness(labels, splits) if labels is not None else None
    return {"per_label": per_label} if per_label is not None else {}


def _check_both_sides(splits: list[Split], previous: DatasetVersion | None) -> None:
    if Split.VALIDATION in splits and Split.TRAIN in splits:
        return
    if previous is not None:
        raise ApplicationError(
            f"Carrying over the split of {previous} would leave one side empty; "
            "freeze with re-split to draw a new split.",
            extra={"field": "resplit"},
        )
    raise ApplicationError(
        "Derived examples follow their origins and retired origins go to training, which "
        "leaves one side of the split empty; approve more examples first.",
        extra={"field": "validation_fraction"},
    )


class SplitOverlapError(ApplicationError):
    """Train and validation share inputs; the freeze is refused until resolved or overridden."""


def _check_split_overlaps(overlaps: list[dict[str, Any]], *, override_reason: str) -> None:
    if not overlaps or override_reason:
        return
    exact = sum(1 for o in overlaps if o["kind"] == EXACT)
    raise SplitOverlapError(
        f"{len(overlaps)} train/validation pair(s) share their input ({exact} exact, "
        f"{len(overlaps) - exact} near-duplicate): a model trained on one side would be "
        "tested on what it saw. Reject or edit one example of each pair, or freeze anyway "
        "with a reason (overlap_override_reason), which is recorded on the version.",
        extra={
            "field": "overlap_override_reason",
            "overlap_count": len(overlaps),
            "overlaps": overlaps[:MAX_LISTED_OVERLAPS],
        },
    )


# A refusal lists this many violating examples; the review queue shows the rest.
VIOLATIONS_SHOWN = 20
MAX_OVERRIDE_REASON_CHARS = 2000


def contract_violations(
    examples: list[Example], contract: dict[str, object]
) -> list[dict[str, object]]:
    """The examples whose answer breaks the contract, each with the reason."""
    if not contract:
        return []
    check = ContractCheck(contract)
    found = []
    for example in examples:
        message = check.violation(assistant_answer(example.messages))
        if message is not None:
            found.append({"example": example.pk, "message": message})
    return found


def contract_override_record(
    violations: list[dict[str, object]], *, reason: str
) -> dict[str, object]:
    """What the version records when approved examples break the contract: refused unless the
    lead gives a reason, because a model trained on contract-breaking answers learns to break
    it, and validation items that break it skew every metric computed on them."""
    if not violations:
        return {}
    reason = reason.strip()
    if not reason:
        shown = ", ".join(
            f"example {v['example']} ({v['message']})" for v in violations[:VIOLATIONS_SHOWN]
        )
        more = len(violations) - VIOLATIONS_SHOWN
        raise ApplicationError(
            f"{len(violations)} approved example(s) break the answer contract: {shown}"
            f"{f' and {more} more' if more > 0 else ''}. Fix or reject them in review, or freeze "
            "anyway with a reason (contract_override_reason), which the version records.",
            extra={"field": "contract_override_reason", "contract_violations": violations},
        )
    if len(reason) > MAX_OVERRIDE_REASON_CHARS:
        raise ApplicationError(
            f"contract_override_reason: {len(reason)} characters, over the limit of "
            f"{MAX_OVERRIDE_REASON_CHARS}.",
            extra={"field": "contract_override_reason"},
        )
    return {"reason": reason, "examples": violations}


def dataset_version_freeze(
    *,
    dataset: Dataset,
    user: User,
    seed: int = 42,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    note: str = "",
    resplit: bool = False,
    overlap_override_reason: str = "",
    contract_override_reason: str = "",
    test_set: bool = False,
) -> DatasetVersion:
    """Freeze the approved examples into an immutable, hashed, split version.

    Examples keep their side of the previous version's split unless ``resplit`` is set. A
    derived example then follows its origin while the origin is held out (see held_out.py),
    and the freeze is refused while train and validation share an input, unless
    ``overlap_override_reason`` says why that is acceptable (recorded on the version).
    Approved examples that break the dataset's answer contract are refused unless
    ``contract_override_reason`` says why they go in anyway (recorded on the version).

    With ``test_set`` the version is a held-out test set: never split (every item is
    Split.TEST; no seeded draw, no carried split, no train/validation overlap check, and
    ``validation_fraction``, ``resplit`` and ``overlap_override_reason`` do not apply), never
    trained on, evaluated whole. Its overlap with the project's training versions is checked
    here, and each later training freeze checks itself against every test set (test_sets.py).
    """
    override_reason = overlap_override_reason.strip()
    if test_set:
        validation_fraction = 0.0
    elif not MIN_VALIDATION_FRACTION <= validation_fraction <= MAX_VALIDATION_FRACTION:
        raise ApplicationError(
            f"validation_fraction must be between {MIN_VALIDATION_FRACTION} and "
            f"{MAX_VALIDATION_FRACTION} (the guide holds out 10 to 20 %); "
            f"got {validation_fraction}.",
            extra={"field": "validation_fraction"},
        )
    if not 0 <= seed <= MAX_SEED:
        raise ApplicationError(
            f"seed must be between 0 and {MAX_SEED}; got {seed}.", extra={"field": "seed"}
        )
    with transaction.atomic():
        # Lock the dataset row so two freezes cannot take the same version number (and read
        # the contract as it is now, not as the caller's copy had it).
        contract = Dataset.objects.select_for_update().get(pk=dataset.pk).answer_contract
        approved = list(
            Example.objects.filter(dataset=dataset, status=ExampleStatus.APPROVED).order_by("id")
        )
        if test_set and not approved:
            raise ApplicationError(
                "No approved examples; a test set needs at least one.",
                extra={"field": "test_set"},
            )
        if not test_set and len(approved) < 2:
            raise ApplicationError(
                f"Only {len(approved)} approved example(s); a version needs at least 2 "
                "so that both train and validation splits have one."
            )
        override = contract_override_record(
            contract_violations(approved, contract), reason=contract_override_reason
        )
        # A test set's items are all Split.TEST: a split is carried from training versions only.
        latest = dataset.versions.filter(is_test_set=False).order_by("-number").first()
        previous: DatasetVersion | None = None
        retired_now: list[int] = []
        overlaps: list[dict[str, Any]] = []
        if test_set:
            splits = [Split.TEST] * len(approved)
        else:
            previous = None if resplit else latest
            retired = retirements_for(dataset)
            splits = _splits_for(
                approved,
                previous,
                contract=contract,
                retired=retired,
                seed=seed,
                validation_fraction=validation_fraction,
            )
            _check_both_sides(splits, previous)
            overlaps = cross_split_overlaps(approved, splits)
            _check_split_overlaps(overlaps, override_reason=override_reason)
            retired_now = newly_retired(approved, splits, retired=retired, latest=latest)
        last = dataset.versions.aggregate(last=Max("number"))["last"] or 0
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=last + 1,
            split_carried_from=previous,
            content_hash=content_hash([e.messages for e in approved]),
            seed=seed,
            validation_fraction=validation_fraction,
            example_count=len(approved),
            train_count=splits.count(Split.TRAIN),
            validation_count=splits.count(Split.VALIDATION),
            note=note,
            retired_from_validation=retired_now,
            overlap_override_reason=override_reason if overlaps else "",
            overlap_count=len(overlaps),
            overlap_pairs=overlaps[:MAX_LISTED_OVERLAPS],
            answer_contract=contract,
            contract_override=override,
            readiness={} if test_set else split_readiness(approved, splits, contract),
            is_test_set=test_set,
            created_by=user,
        )
        DatasetVersionExample.objects.bulk_create(
            DatasetVersionExample(
                version=version,
                example=example,
                position=i,
                split=split,
                messages=example.messages,
                metadata=example.metadata,
            )
            for i, (example, split) in enumerate(zip(approved, splits, strict=True))
        )
        # In the freeze's transaction, so a version is never seen without its overlap check.
        overlaps_after_freeze(version)
    return version


def example_derive(
    *,
    origin: Example,
    messages: list[dict[str, str]],
    origin_kind: OriginKind,
    metadata: dict[str, Any] | None = None,
) -> Example:
    """A new pending example made from ``origin`` (a failure sent to review, production
    feedback): it lands in the origin's dataset and carries the link, so the freeze keeps it on
    its origin's side while the origin is held out. Every derived example is made here."""
    return Example.objects.create(
        dataset_id=origin.dataset_id,
        messages=messages,
        status=ExampleStatus.PENDING,
        metadata=metadata or {},
        derived_from=origin,
        origin_kind=origin_kind,
    )


def example_add_for_review(
    *,
    dataset: Dataset,
    messages: list[dict[str, str]],
    origin_kind: OriginKind,
    metadata: dict[str, Any] | None = None,
) -> Example:
    """A new pending example with no example behind it (a production request sent to review):
    it lands in ``dataset`` and takes the side of the split it is drawn into. An example made
    from another example is :func:`example_derive`'s."""
    return Example.objects.create(
        dataset=dataset,
        messages=messages,
        status=ExampleStatus.PENDING,
        metadata=metadata or {},
        origin_kind=origin_kind,
    )


def example_move_to_training(
    *, example: Example, user: User, reason: str = ""
) -> tuple[ValidationRetirement, ValidationShrink]:
    """The lead's explicit choice to train on a derived example: from the next freeze on it
    goes to training and its origin leaves validation (recorded, append-only). Returns the
    record and what it does to the evaluation set, for the warning."""
    origin_id = example.derived_from_id
    if origin_id is None:
        raise ApplicationError(
            f"Example {example.pk} was not made from another example; it takes the side of "
            "the split it is drawn into.",
            extra={"field": "example"},
        )
    with transaction.atomic():
        locked = Example.objects.select_for_update().get(pk=example.pk)
        earlier = ValidationRetirement.objects.filter(derived=locked).first()
        if earlier is not None:
            raise ConflictError(
                f"Example {locked.pk} was already moved to training by "
                f"{earlier.retired_by.get_username()} on {earlier.created_at:%Y-%m-%d %H:%M}.",
                extra={"field": "example"},
            )
        shrink = validation_shrink(locked)
        retirement = ValidationRetirement.objects.create(
            derived=locked,
            origin_id=origin_id,
            retired_by=user,
            reason=reason.strip(),
            validation_count_before=shrink.before,
        )
    return retirement, shrink
