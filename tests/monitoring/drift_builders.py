"""Generated support tickets for drift tests: a served version trained on some (its train
split, with a label-set contract) and request log rows answered by it, usual or shifted."""

from __future__ import annotations

import datetime as dt
import random

from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import DatasetVersionExample, Split
from ftportal.models import Project
from registry.models import ModelVersion
from serving.models import RequestLog, RequestStatus
from tests.monitoring.traffic_builders import alias_to, request_id, served_version

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
LABELS = ["billing", "shipping", "account"]
TOPICS = {
    "billing": ["charged", "invoice", "refund", "payment", "card", "price", "bill"],
    "shipping": ["parcel", "delivery", "courier", "tracking", "package", "arrived", "late"],
    "account": ["password", "login", "email", "profile", "username", "reset", "locked"],
}
FILLER = ["my", "the", "was", "is", "please", "help", "why", "not", "again", "today", "order"]
# What the shifted window asks about: nothing in training looks like it.
NEW_TOPIC = ["recipe", "oven", "tomato", "basil", "simmer", "garlic", "pasta", "sauce", "bake"]


def sentence(rng: random.Random, topic_words: list[str], length: int) -> str:
    words = [rng.choice(topic_words if rng.random() < 0.5 else FILLER) for _ in range(length)]
    return " ".join(words).capitalize() + "?"


def ticket(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(LABELS)
    return sentence(rng, TOPICS[label], rng.randint(6, 14)), label


def trained_version(
    project: Project, lead: User, base_model: BaseModel, *, examples: int = 600
) -> ModelVersion:
    """A production version trained on ``examples`` generated tickets."""
    contract = {"kind": "label_set", "labels": [*LABELS, "bug", "refund_fraud"]}
    version = served_version(project, lead, base_model, contract=contract)
    rng = random.Random(7)
    start = DatasetVersionExample.objects.filter(version=version.dataset_version).count()
    DatasetVersionExample.objects.bulk_create(
        DatasetVersionExample(
            version=version.dataset_version,
            position=start + i,
            split=Split.TRAIN,
            messages=[
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ],
        )
        for i, (text, label) in enumerate(ticket(rng) for _ in range(examples))
    )
    alias_to(version)
    return version


def logged(
    version: ModelVersion,
    requests: list[tuple[str, str]],
    *,
    seed: int,
    now: dt.datetime = NOW,
) -> list[str]:
    """The requests as answered by ``version`` in the 10 hours before ``now``; their ids."""
    rng = random.Random(seed)
    project = version.registered_model.project
    rows = [
        RequestLog(
            project=project,
            request_id=request_id(),
            requested_model=f"{project.pk}/triage/production",
            served_version=version,
            messages=[
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": text},
            ],
            output=label,
            status=RequestStatus.OK,
            latency_ms=100,
            created_at=now - dt.timedelta(minutes=rng.randint(1, 600)),
        )
        for text, label in requests
    ]
    RequestLog.objects.bulk_create(rows)
    return [row.request_id for row in rows]
