"""A served alias's traffic as the production figures and pages need it: versions of a named
model, aliases and their history written straight into the registry's tables, and request log
rows (with feedback and outcome events) generated in bulk from a seed, with what each row is
so that a test can compute the expected figures itself."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.models import Project
from registry.models import Alias, AliasChange, AliasChangeKind, ModelVersion
from registry.services import model_version_register
from serving.models import Feedback, OutcomeEvent, RequestLog, RequestStatus
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

# Text from a hostile or merely international world: markup, quotes, accents, emoji, RTL.
ODD_TEXTS = (
    "<script>window.__xss=1</script>",
    "Ünïcødé ✓ «quotes» & 'apostrophes' \"double\"",
    "emoji 😀🚀 and \u202eRTL override\u202c",
    "line\nbreaks\tand tabs; DROP TABLE x; --",
    "%2F%40 percent-encoded look-alikes / @ %",
)


def served_version(
    project: Project,
    lead: User,
    base_model: BaseModel,
    *,
    model_name: str = "triage",
    contract: Mapping[str, object] | None = None,
) -> ModelVersion:
    """A registered version of ``model_name`` (a finished local job on a fresh frozen dataset
    version), its dataset version carrying ``contract`` when given."""
    dataset_version = frozen_version(project, lead)
    if contract is not None:
        DatasetVersion.objects.filter(pk=dataset_version.pk).update(answer_contract=dict(contract))
        dataset_version.refresh_from_db()
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=dataset_version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name=model_name,
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    return model_version_register(job=job, checkpoint=None, adapter_dir=f"/nowhere/{job.pk}")


def alias_to(version: ModelVersion, name: str = "production") -> Alias:
    alias, _ = Alias.objects.update_or_create(
        registered_model=version.registered_model,
        name=name,
        defaults={"model_version": version},
    )
    return alias


def alias_change(
    version: ModelVersion,
    *,
    user: User,
    at: datetime,
    alias: str = "production",
    kind: AliasChangeKind = AliasChangeKind.PROMOTE,
    from_version: ModelVersion | None = None,
    reason: str = "better on the held-out split",
) -> AliasChange:
    """One row of the alias's history, dated ``at`` (the registry's services date it now)."""
    change = AliasChange.objects.create(
        registered_model=version.registered_model,
        alias=alias,
        kind=kind,
        from_version=from_version,
        to_version=version,
        changed_by=user,
        reason=reason,
    )
    AliasChange.objects.filter(pk=change.pk).update(created_at=at)
    change.refresh_from_db()
    return change


_serial = iter(range(1, 10**9))


def request_id() -> str:
    return f"req_{next(_serial):032x}"


@dataclass
class Row:
    """One generated request as the test knows it."""

    request_id: str
    requested_model: str
    created_at: datetime
    status: str
    latency_ms: int
    output: str
    served_version_id: int | None
    shadow: bool = False
    cost: Decimal | None = None
    feedback: float | None = None
    events: int = 0
    fallback_route_id: int | None = None

    @property
    def counted(self) -> bool:
        return not self.shadow and self.status != RequestStatus.REFUSED


@dataclass
class Traffic:
    rows: list[Row] = field(default_factory=list)


STATUSES = (
    (RequestStatus.OK, 80),
    (RequestStatus.FALLBACK, 7),
    (RequestStatus.ERROR, 8),
    (RequestStatus.REFUSED, 5),
)


def generated_rows(
    *,
    seed: int,
    count: int,
    names: Sequence[str],
    start: datetime,
    span: timedelta,
    version_ids: Sequence[int | None],
    outputs: Sequence[str] = ODD_TEXTS,
) -> list[Row]:
    """``count`` requests spread over [start, start + span), each named one of ``names`` and
    served by one of ``version_ids``: mostly answered, some fallbacks, errors and refusals, a
    few shadows; a price on some, feedback on some, one or two outcome events on some."""
    rng = random.Random(seed)
    statuses = [status for status, _ in STATUSES]
    weights = [weight for _, weight in STATUSES]
    rows = []
    for _ in range(count):
        status = rng.choices(statuses, weights)[0]
        answered = status in (RequestStatus.OK, RequestStatus.FALLBACK)
        rows.append(
            Row(
                request_id=request_id(),
                requested_model=rng.choice(names),
                created_at=start + span * rng.random(),
                status=status,
                latency_ms=rng.randint(3, 4000),
                output=rng.choice(outputs) if answered else "",
                served_version_id=rng.choice(version_ids),
                shadow=rng.random() < 0.05,
                cost=(
                    Decimal(rng.randint(1, 10_000)) / Decimal(10**6)
                    if answered and rng.random() < 0.7
                    else None
                ),
                feedback=rng.choice((0.0, 1.0, 0.5, 0.25)) if rng.random() < 0.15 else None,
                events=rng.choice((1, 1, 2)) if rng.random() < 0.2 else 0,
            )
        )
    return rows


def rows_store(project: Project, rows: Sequence[Row]) -> None:
    """The rows into the request log, with their feedback and events, in bulk."""
    RequestLog.objects.bulk_create(
        [
            RequestLog(
                project=project,
                request_id=row.request_id,
                requested_model=row.requested_model,
                served_version_id=row.served_version_id,
                fallback_route_id=row.fallback_route_id,
                messages=[{"role": "user", "content": f"question {row.output}"}],
                output=row.output,
                status=row.status,
                latency_ms=row.latency_ms,
                prompt_tokens=10,
                completion_tokens=5,
                cost=row.cost,
                cost_known=row.cost is not None,
                shadow_of="req_mirrored" if row.shadow else "",
                feedback_score=row.feedback,
                created_at=row.created_at,
            )
            for row in rows
        ],
        batch_size=2000,
    )
    Feedback.objects.bulk_create(
        [
            Feedback(project=project, request_id=row.request_id, score=row.feedback)
            for row in rows
            if row.feedback is not None
        ],
        batch_size=2000,
    )
    OutcomeEvent.objects.bulk_create(
        [
            OutcomeEvent(project=project, request_id=row.request_id, name=f"resolved-{n}")
            for row in rows
            for n in range(row.events)
        ],
        batch_size=2000,
    )
