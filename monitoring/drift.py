"""Drift reports: an alias's recent requests against the training data of the version that
served them, on a schedule (celery beat) and on demand.

The reference is the train split of the served version's dataset version (frozen, so its
embeddings are computed once and kept on disk by the dataset's content hash); the current
window is the requests that version answered through the alias in the project's drift window
(``MonitoringSettings.drift_window_hours``), shadows and errors left out. What a request says
is its last user message, as an example's is; what it answered is its output. For a label-set
contract (or a JSON Schema whose top-level property has an ``enum``) the answered labels are
compared with the trained ones too. The statistics are ``monitoring.drift_stats``; this module
gathers the texts, calls it, and stores a ``DriftReport`` that alert rules read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from datasets.contracts import JSON_SCHEMA, LABEL_SET
from datasets.models import DatasetVersionExample, Split
from registry.models import PRODUCTION_ALIAS, Alias, ModelVersion, RegisteredModel
from serving.models import RequestLog, RequestStatus

from .drift_stats import DriftResult, DriftSample, ReferenceEmbeddings, drift_figures
from .models import DriftReport, DriftStatus
from .selectors import monitoring_settings_of, production_aliases

logger = logging.getLogger(__name__)

# The most recent requests of a window a report reads (bench/drift.py measures 100,000).
MAX_CURRENT_REQUESTS = 100_000
# How much of a drifted request a report keeps to show (the log keeps the rest).
SHOWN_CHARS = 300
DRIFTED_EXAMPLES = 20


# --- what a conversation says and answers ---------------------------------------------------


def _content(message: object) -> str:
    if isinstance(message, Mapping):
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts: the text ones, in order
            return " ".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
    return ""


def _role(message: object) -> str:
    return str(message.get("role", "")) if isinstance(message, Mapping) else ""


def last_user_text(messages: object) -> str:
    """The last user message of a conversation (a request's, or an example's prompt)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if _role(message) == "user":
            return _content(message)
    return ""


def final_answer(messages: object) -> str:
    """An example's answer: its last assistant message."""
    if not isinstance(messages, list) or not messages or _role(messages[-1]) != "assistant":
        return ""
    return _content(messages[-1])


def label_reader(contract: Mapping[str, Any]) -> LabelReader | None:
    """How an answer names its label under ``contract``; None when it names none."""
    kind = contract.get("kind") if contract else None
    if kind == LABEL_SET:
        return LabelReader(field=None)
    if kind == JSON_SCHEMA:
        properties = (contract.get("schema") or {}).get("properties") or {}
        for name, schema in properties.items():
            if isinstance(schema, Mapping) and isinstance(schema.get("enum"), list):
                return LabelReader(field=str(name))
    return None


@dataclass(frozen=True)
class LabelReader:
    """A label-set answer is its label; a JSON answer's label is one enum property's value."""

    field: str | None

    def label_of(self, answer: str) -> str | None:
        if self.field is None:
            return answer.strip()
        try:
            parsed = json.loads(answer)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or self.field not in parsed:
            return None
        return str(parsed[self.field])

    def labels_of(self, answers: Iterable[str]) -> list[str]:
        return [label for label in map(self.label_of, answers) if label is not None]


# --- the reference and the window -------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    texts: list[str]
    answers: list[str]


def reference_of(version: ModelVersion) -> Reference:
    """The served version's training examples (the train split of its dataset version)."""
    rows = DatasetVersionExample.objects.filter(
        version_id=version.dataset_version_id, split=Split.TRAIN
    ).values_list("messages", flat=True)
    texts, answers = [], []
    for messages in rows.iterator(chunk_size=2000):
        texts.append(last_user_text(messages))
        answers.append(final_answer(messages))
    return Reference(texts=texts, answers=answers)


@dataclass(frozen=True)
class Window:
    request_ids: list[str]
    texts: list[str]
    outputs: list[str]


def window_of(version: ModelVersion, since: dt.datetime, until: dt.datetime) -> Window:
    """The answered requests ``version`` served in [since, until), newest first, at most
    MAX_CURRENT_REQUESTS (along request_log_version_newest)."""
    rows = (
        RequestLog.objects.filter(
            project_id=version.registered_model.project_id,
            served_version=version,
            created_at__gte=since,
            created_at__lt=until,
            status=RequestStatus.OK,
            shadow_of="",
        )
        .order_by("-created_at", "-id")
        .values_list("request_id", "messages", "output")[:MAX_CURRENT_REQUESTS]
    )
    ids, texts, outputs = [], [], []
    for request_id, messages, output in rows.iterator(chunk_size=5000):
        ids.append(request_id)
        texts.append(last_user_text(messages))
        outputs.append(output)
    return Window(request_ids=ids, texts=texts, outputs=outputs)


# --- reference embeddings, computed once per dataset version ------------------------------------


def _embedding_cache_path(version: ModelVersion) -> Path:
    # The dataset version is frozen, so its content hash names its train split's texts; the
    # embedder's fingerprint is checked on reading (drift_stats reuses only its own).
    key = f"{version.dataset_version.content_hash}:{version.dataset_version_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return Path(settings.VAR_DIR) / "drift-embeddings" / f"{digest}.npz"


def reference_embeddings_cached(version: ModelVersion) -> ReferenceEmbeddings | None:
    """The reference's embedded sample kept by an earlier report, or None."""
    path = _embedding_cache_path(version)
    try:
        with np.load(path) as stored:
            return ReferenceEmbeddings(
                rows=stored["rows"],
                vectors=stored["vectors"],
                fingerprint=str(stored["fingerprint"]),
            )
    except (OSError, KeyError, ValueError):  # none yet, or unreadable: embed again
        return None


def reference_embeddings_keep(version: ModelVersion, embeddings: ReferenceEmbeddings) -> None:
    path = _embedding_cache_path(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a worker reading it at the same moment never sees half.
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(
        partial,
        rows=embeddings.rows,
        vectors=embeddings.vectors,
        fingerprint=np.array(embeddings.fingerprint),
    )
    partial.replace(path)


# --- the report -------------------------------------------------------------------------------


def _report_figures(result: DriftResult) -> dict[str, Any]:
    return {figure.name: figure.as_json() for figure in result.figures}


def drift_report_compute(
    *,
    registered_model: RegisteredModel,
    alias: str = PRODUCTION_ALIAS,
    now: dt.datetime | None = None,
) -> DriftReport | None:
    """Compare the alias's window with its served version's training data and store the
    report; None when the alias does not exist."""
    now = now or timezone.now()
    found = (
        Alias.objects.filter(registered_model=registered_model, name=alias)
        .select_related("model_version__dataset_version", "model_version__registered_model")
        .first()
    )
    if found is None:
        return None
    version = found.model_version
    choices = monitoring_settings_of(registered_model.project_id)
    since = now - dt.timedelta(hours=choices.drift_window_hours)
    started = time.perf_counter()
    reference = reference_of(version)
    window = window_of(version, since, now)
    report = DriftReport(
        project_id=registered_model.project_id,
        registered_model=registered_model,
        alias=alias,
        model_version=version,
        window_start=since,
        window_end=now,
        reference_count=len(reference.texts),
        current_count=len(window.texts),
    )
    if len(window.texts) < choices.drift_min_requests or not reference.texts:
        report.status = DriftStatus.TOO_FEW
        report.seconds = time.perf_counter() - started
        report.save()
        return report
    reader = label_reader(version.dataset_version.answer_contract or {})
    cached = reference_embeddings_cached(version)
    result = drift_figures(
        DriftSample(
            texts=reference.texts,
            labels=reader.labels_of(reference.answers) if reader else None,
        ),
        DriftSample(
            texts=window.texts,
            labels=reader.labels_of(window.outputs) if reader else None,
        ),
        reference_embeddings=cached,
    )
    if result.reference_embeddings is not None and result.reference_embeddings is not cached:
        reference_embeddings_keep(version, result.reference_embeddings)
    report.status = DriftStatus.DRIFTED if result.drifted else DriftStatus.STABLE
    report.figures = _report_figures(result)
    report.drifted_examples = [
        {
            "request_id": window.request_ids[example.index],
            "similarity": round(example.similarity, 4),
            "text": window.texts[example.index][:SHOWN_CHARS],
        }
        for example in result.most_drifted[:DRIFTED_EXAMPLES]
    ]
    report.seconds = time.perf_counter() - started
    report.save()
    return report


def drift_reports_run(*, now: dt.datetime | None = None) -> list[DriftReport]:
    """A report for every production alias; one failing is logged and the others go on."""
    reports = []
    for alias in production_aliases():
        try:
            report = drift_report_compute(
                registered_model=alias.registered_model, alias=alias.name, now=now
            )
        except Exception:  # one alias's failure must not stop the others' reports
            logger.exception("drift report of %s@%s failed", alias.registered_model, alias.name)
            continue
        if report is not None:
            reports.append(report)
    return reports
