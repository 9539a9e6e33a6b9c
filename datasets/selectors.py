"""Reads for the datasets app."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404

from ftportal.errors import ApplicationError
from ftportal.models import Project

from .contracts import LABEL_SET, label_form
from .formats import (
    CSV,
    CSV_EXPORT_HEADER,
    EXPORT_FORMATS,
    EXPORT_REQUIREMENT,
    OPENAI_CHAT,
    csv_line,
    csv_metadata_columns,
    export_line,
)
from .models import (
    AnalysisRun,
    Dataset,
    DatasetVersion,
    DatasetVersionExample,
    Example,
    ExampleStatus,
    ImportBatch,
)

# --- Project-scoped lookups: the one way pages, the API and forms reach each entity of the
# app by id. The `_of` querysets hold only the project's rows (a body or form reference reads
# them and answers 400 for a missing id); the `_in_project` ones answer 404 for any id outside
# the project, another project's included, so that ids do not leak. ---


def datasets_of(project: Project) -> QuerySet[Dataset]:
    return Dataset.objects.filter(project=project)


def dataset_in_project(project: Project, dataset_id: int) -> Dataset:
    return get_object_or_404(datasets_of(project), pk=dataset_id)


def dataset_versions_of(project: Project) -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.filter(dataset__project=project).select_related(
        "dataset", "created_by"
    )


def dataset_version_in_project(project: Project, version_id: int) -> DatasetVersion:
    return get_object_or_404(dataset_versions_of(project), pk=version_id)


def examples_of(project: Project) -> QuerySet[Example]:
    """The project's examples that are published (Example's manager hides the rows of an
    unfinished import), with their dataset and import batch."""
    return Example.objects.filter(dataset__project=project).select_related(
        "dataset", "import_batch"
    )


def example_in_project(project: Project, example_id: int) -> Example:
    return get_object_or_404(examples_of(project), pk=example_id)


def import_batch_in_project(project: Project, batch_id: int) -> ImportBatch:
    return get_object_or_404(
        ImportBatch.objects.filter(dataset__project=project).select_related(
            "dataset", "uploaded_by"
        ),
        pk=batch_id,
    )


def analysis_run_in_project(project: Project, run_id: int) -> AnalysisRun:
    return get_object_or_404(
        AnalysisRun.objects.filter(dataset__project=project).select_related("dataset"),
        pk=run_id,
    )


def status_counts(dataset: Dataset) -> dict[str, int]:
    counts = {status.value: 0 for status in ExampleStatus}
    rows = dataset.examples.values("status").annotate(n=Count("id")).order_by()
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def version_items(
    version: DatasetVersion, *, split: str | None = None
) -> QuerySet[DatasetVersionExample]:
    items = version.items.all()
    return items.filter(split=split) if split else items


def version_export_check(
    version: DatasetVersion, *, split: str | None = None, fmt: str = OPENAI_CHAT
) -> None:
    """Refuse, before the download starts, a format that cannot hold some of the examples.

    The message names the examples (by position in the version, and example id), so the user
    can fix or drop them rather than receive a file that silently lacks them.
    """
    if fmt not in EXPORT_FORMATS:
        raise ApplicationError(
            f"format: {fmt!r} is not an export format; use one of: {', '.join(EXPORT_FORMATS)}.",
            extra={"field": "format"},
        )
    requirement = EXPORT_REQUIREMENT[fmt]
    if requirement is None:
        return
    fits, why = requirement
    refused = [
        (position, example_id)
        for position, example_id, messages in version_items(version, split=split)
        .values_list("position", "example_id", "messages")
        .iterator()
        if not fits(messages)
    ]
    if refused:
        shown = ", ".join(
            f"#{position}" + (f" (example {example_id})" if example_id else "")
            for position, example_id in refused[:MAX_NAMED_REFUSALS]
        )
        more = (
            f" and {len(refused) - MAX_NAMED_REFUSALS} more"
            if len(refused) > MAX_NAMED_REFUSALS
            else ""
        )
        raise ApplicationError(
            f"format: {why}; {len(refused)} example(s) of {version} do not fit: {shown}{more}.",
            extra={"field": "format", "positions": [position for position, _ in refused]},
        )


MAX_NAMED_REFUSALS = 20


def version_export_lines(
    version: DatasetVersion, *, split: str | None = None, fmt: str = OPENAI_CHAT
) -> Iterator[str]:
    """The version in a provider's format, one line at a time; call version_export_check first.

    OpenAI chat JSONL: one {"messages": [...]} per line. Anthropic: system at the top level.
    Prompt/completion: single-turn. CSV: input, ideal_output, system, split with a header.
    """
    items = version_items(version, split=split)
    keys = _metadata_keys(items) if fmt == CSV else []
    if fmt == CSV:
        yield csv_line([*CSV_EXPORT_HEADER, *csv_metadata_columns(keys)])
    rows = items.values_list("messages", "split", "metadata")
    for messages, item_split, metadata in rows.iterator(chunk_size=2000):
        yield export_line(fmt, messages, item_split, metadata, keys)


def _metadata_keys(items: QuerySet[DatasetVersionExample]) -> list[str]:
    """Every metadata key in the items, sorted: one CSV column each."""
    keys: set[str] = set()
    for metadata in items.exclude(metadata={}).values_list("metadata", flat=True).iterator():
        keys.update(metadata)
    return sorted(keys)


def export_filename(
    version: DatasetVersion, *, split: str | None = None, fmt: str = OPENAI_CHAT
) -> str:
    """A download name safe for a Content-Disposition header, whatever the dataset is called."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", version.dataset.name).strip("_") or "dataset"
    suffix = f"-{split}" if split else ""
    kind = "" if fmt == OPENAI_CHAT else f"-{fmt.replace('_', '-')}"
    extension = "csv" if fmt == CSV else "jsonl"
    return f"{stem}-v{version.number}{suffix}{kind}.{extension}"


def export_content_type(fmt: str) -> str:
    return "text/csv; charset=utf-8" if fmt == CSV else "application/jsonl"


@dataclass(frozen=True)
class ChangedExample:
    before: DatasetVersionExample
    after: DatasetVersionExample


@dataclass(frozen=True)
class VersionDiff:
    older: DatasetVersion
    newer: DatasetVersion
    added: list[DatasetVersionExample]
    removed: list[DatasetVersionExample]
    changed: list[ChangedExample]
    unchanged: int

    @property
    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed, {self.unchanged} unchanged"
        )


def _diff_key(item: DatasetVersionExample) -> str:
    # Items are matched by the example they were frozen from; an example deleted since then
    # can only be matched by its content.
    if item.example_id is not None:
        return f"example:{item.example_id}"
    return "content:" + json.dumps(item.messages, sort_keys=True)


def version_diff(older: DatasetVersion, newer: DatasetVersion) -> VersionDiff:
    """What changed between two versions of one dataset: examples added, removed, edited."""
    before = {_diff_key(item): item for item in older.items.all()}
    after = {_diff_key(item): item for item in newer.items.all()}
    changed = [
        ChangedExample(before[key], after[key])
        for key in after
        if key in before and before[key].messages != after[key].messages
    ]
    return VersionDiff(
        older=older,
        newer=newer,
        added=[item for key, item in after.items() if key not in before],
        removed=[item for key, item in before.items() if key not in after],
        changed=changed,
        unchanged=sum(1 for key in after if key in before) - len(changed),
    )


def previous_version(version: DatasetVersion) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.filter(dataset_id=version.dataset_id, number__lt=version.number)
        .order_by("-number")
        .first()
    )


def version_compared_with(newer: DatasetVersion, against_id: int | None) -> DatasetVersion:
    """The version a diff of ``newer`` starts from: ``against_id`` when given (another version
    of the same dataset, 404 otherwise), else the previous one (``newer`` itself when first)."""
    if against_id is not None:
        return get_object_or_404(
            DatasetVersion.objects.filter(dataset_id=newer.dataset_id), pk=against_id
        )
    return previous_version(newer) or newer


@dataclass(frozen=True)
class LabelCount:
    label: str
    approved: int
    pending: int


@dataclass(frozen=True)
class LabelTally:
    """How the approved and pending answers of a dataset with a label-set contract fall on its
    labels: every label (those with no example too), fewest approved first, and the answers
    that are none of them."""

    labels: list[LabelCount]
    outside_approved: int
    outside_pending: int
    # Labels with fewer approved examples than the readiness threshold a label.
    thin: list[str]
    threshold: int


def label_tally(dataset: Dataset, *, threshold: int) -> LabelTally | None:
    """The tally of ``dataset``'s label set; None when its contract is not a label set. One
    query, reading each example's answer (the answers are in a JSON list of messages)."""
    contract = dataset.answer_contract or {}
    if contract.get("kind") != LABEL_SET:
        return None
    labels = list(contract.get("labels") or [])
    counted: dict[str, int] = {ExampleStatus.APPROVED: 0, ExampleStatus.PENDING: 0}
    counts = {label: dict(counted) for label in labels}
    outside = dict(counted)
    rows = dataset.examples.filter(status__in=list(outside)).values_list("status", "messages")
    for status, messages in rows.iterator(chunk_size=2000):
        answer = label_form(messages[-1]["content"]) if messages else ""
        counts.get(answer, outside)[status] += 1
    tally = [
        LabelCount(label, c[ExampleStatus.APPROVED], c[ExampleStatus.PENDING])
        for label, c in counts.items()
    ]
    tally.sort(key=lambda count: (count.approved, count.label))
    return LabelTally(
        labels=tally,
        outside_approved=outside[ExampleStatus.APPROVED],
        outside_pending=outside[ExampleStatus.PENDING],
        thin=[count.label for count in tally if count.approved < threshold],
        threshold=threshold,
    )
