"""Reads for quality analysis: runs, findings, counts by kind, the bulk fix's size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet
from django.urls import reverse

from catalog.models import BaseModel

from ..models import AnalysisRun, AnalysisStatus, Dataset, Finding
from .findings import EXACT_DUPLICATE, KIND_LABELS

RUNNING_STATUSES = frozenset({AnalysisStatus.QUEUED, AnalysisStatus.RUNNING})


def analysis_catalog() -> QuerySet[BaseModel]:
    """Every catalog model, retired ones included: sizing a dataset for a model is still useful."""
    return BaseModel.objects.order_by("-is_active", "parameter_count", "key")


def analysis_runs_for(dataset: Dataset) -> QuerySet[AnalysisRun]:
    return AnalysisRun.objects.filter(dataset=dataset).order_by("-id")


def latest_analysis_run(dataset: Dataset) -> AnalysisRun | None:
    return analysis_runs_for(dataset).first()


def findings_for(run: AnalysisRun, *, kind: str | None = None) -> QuerySet[Finding]:
    findings = run.findings.order_by("id")
    return findings.filter(kind=kind) if kind else findings


def duplicate_fix_count(run: AnalysisRun) -> int:
    """How many examples the "reject all but one of each exact duplicate" fix would reject."""
    if run.status != AnalysisStatus.SUCCEEDED:
        return 0
    groups = run.findings.filter(kind=EXACT_DUPLICATE).values("group_key").annotate(n=Count("id"))
    return sum(group["n"] - 1 for group in groups)


def queue_url(*, project_id: int, dataset_id: int, kind: str, status: str) -> str:
    """The review queue filtered on a finding kind (the queue reads ``?finding=<kind>``)."""
    base = reverse("review_queue", args=[project_id, dataset_id])
    return f"{base}?finding={kind}&status={status}"


@dataclass(frozen=True)
class KindRow:
    kind: str
    label: str
    severity: str
    examples: int
    queue_url: str


def kind_rows(
    counts: dict[str, Any], *, project_id: int, dataset_id: int, status: str
) -> list[KindRow]:
    """Rows for a findings table from a stats ``findings`` dict, each linked to the queue."""
    return [
        KindRow(
            kind=kind,
            label=str(entry.get("label") or KIND_LABELS.get(kind, kind)),
            severity=str(entry.get("severity", "")),
            examples=int(entry.get("examples", 0)),
            queue_url=queue_url(
                project_id=project_id, dataset_id=dataset_id, kind=kind, status=status
            ),
        )
        for kind, entry in counts.items()
    ]
