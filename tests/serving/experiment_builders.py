"""Experiments as the tests need them: a model with two hosted versions (v1 in production),
a running experiment on its production alias, and request log rows with outcomes written
straight into the tables (the /v1/feedback and events endpoints are another slice's)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User
from django.utils import timezone

from catalog.models import BaseModel, Provider
from ftportal.models import Project
from registry.models import ModelVersion
from serving.models import Experiment, Feedback, OutcomeEvent, RequestLog, RequestStatus
from serving.services import ArmSpec, experiment_create, experiment_start
from tests.factories import fake_endpoint
from tests.serving.test_gateway import KEY_ENV, hosted_version, promote

SUCCESS = "ticket_resolved"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Where:
    """Where a fake provider listens (only its URL is registered)."""

    base_url: str


UNREACHABLE = Where("http://127.0.0.1:9")


@dataclass(frozen=True)
class TwoVersions:
    first: ModelVersion
    second: ModelVersion


def two_versions(project: Project, lead: User, where: Where = UNREACHABLE) -> TwoVersions:
    """Versions 1 and 2 of one model, hosted (``ft:`` ids at ``where``); 1 in production."""
    first = hosted_version(project, lead, where)  # type: ignore[arg-type]
    promote(first, lead)
    second = hosted_version(project, lead, where)  # type: ignore[arg-type]
    return TwoVersions(first, second)


def other_base(where: Where = UNREACHABLE) -> BaseModel:
    """A hosted base model as it is, for a baseline arm (its own key, not the versions')."""
    base, _ = BaseModel.objects.update_or_create(
        key="gpt-4.1-mini-2025-04-14",
        defaults={
            "display_name": "GPT-4.1 mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("5.00"),
            "endpoint": fake_endpoint(where.base_url, secret_env=KEY_ENV),
            "is_active": True,
        },
    )
    return base


def running_experiment(
    project: Project,
    lead: User,
    versions: TwoVersions,
    *,
    weights: tuple[int, int] = (1, 1),
    shadow: BaseModel | None = None,
    shadow_share: float = 0.0,
    start: bool = True,
) -> Experiment:
    arms = [
        ArmSpec(name="control", weight=weights[0], model_version_id=versions.first.pk),
        ArmSpec(name="challenger", weight=weights[1], model_version_id=versions.second.pk),
    ]
    if shadow is not None:
        arms.append(ArmSpec(name="shadow", base_model_key=shadow.key, shadow=True))
    experiment = experiment_create(
        project=project,
        user=lead,
        name=f"triage test {next(_ids)}",
        registered_model=versions.first.registered_model,
        alias="production",
        success_event=SUCCESS,
        arms=arms,
        shadow_share=shadow_share,
    )
    return experiment_start(experiment=experiment, user=lead) if start else experiment


def logged(
    experiment: Experiment,
    arm_name: str,
    *,
    requests: int,
    successes: int = 0,
    errors: int = 0,
    scores: tuple[float, ...] = (),
    latency_ms: int = 100,
    cost: Decimal | None = None,
    shadow_of: str = "",
) -> list[str]:
    """``requests`` log rows served by the arm; the first ``successes`` get a success event
    (and one an unrelated event), the last ``errors`` failed, the first ``len(scores)`` feedback."""
    arm = experiment.arms.get(name=arm_name)
    ids = [f"req_{next(_ids):032x}" for _ in range(requests)]
    RequestLog.objects.bulk_create(
        RequestLog(
            project=experiment.project,
            request_id=request_id,
            requested_model="Ticket triage/production",
            served_version=arm.model_version,
            experiment_arm=arm.name,
            arm=arm,
            shadow_of=shadow_of,
            messages=[{"role": "user", "content": "hi"}],
            status=RequestStatus.ERROR if position >= requests - errors else RequestStatus.OK,
            latency_ms=latency_ms + position,
            cost=cost,
            cost_known=cost is not None,
            created_at=timezone.now(),
        )
        for position, request_id in enumerate(ids)
    )
    events = [
        OutcomeEvent(
            project=experiment.project, request_id=request_id, name=experiment.success_event
        )
        for request_id in ids[:successes]
    ]
    # A second event of the same success on one request counts it once; another name, never.
    events += [
        OutcomeEvent(
            project=experiment.project, request_id=request_id, name=experiment.success_event
        )
        for request_id in ids[:1][:successes]
    ]
    events += [
        OutcomeEvent(project=experiment.project, request_id=request_id, name="page_viewed")
        for request_id in ids[successes:]
    ]
    OutcomeEvent.objects.bulk_create(events)
    Feedback.objects.bulk_create(
        Feedback(project=experiment.project, request_id=request_id, score=score)
        for request_id, score in zip(ids, scores, strict=False)
    )
    return ids
