"""Reads for the datasets app."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from django.db.models import Count, QuerySet

from ftportal.models import Project

from .models import Dataset, DatasetVersion, DatasetVersionExample, Example, ExampleStatus


def datasets_for_project(project: Project) -> QuerySet[Dataset]:
    return Dataset.objects.filter(project=project)


def status_counts(dataset: Dataset) -> dict[str, int]:
    counts = {status.value: 0 for status in ExampleStatus}
    rows = dataset.examples.values("status").annotate(n=Count("id")).order_by()
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def next_pending_example(dataset: Dataset, *, after_id: int = 0) -> Example | None:
    """The next example waiting for review, in import order, wrapping around once."""
    pending = dataset.examples.filter(status=ExampleStatus.PENDING)
    return pending.filter(id__gt=after_id).first() or pending.first()


def version_items(
    version: DatasetVersion, *, split: str | None = None
) -> QuerySet[DatasetVersionExample]:
    items = version.items.all()
    return items.filter(split=split) if split else items


def version_export_lines(version: DatasetVersion, *, split: str | None = None) -> Iterator[str]:
    """Chat JSONL as the OpenAI fine-tuning format expects: one {"messages": [...]} per line."""
    for item in version_items(version, split=split).iterator():
        yield json.dumps({"messages": item.messages}, ensure_ascii=False) + "\n"


def export_filename(version: DatasetVersion, *, split: str | None = None) -> str:
    """A download name safe for a Content-Disposition header, whatever the dataset is called."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", version.dataset.name).strip("_") or "dataset"
    suffix = f"-{split}" if split else ""
    return f"{stem}-v{version.number}{suffix}.jsonl"
