"""Drift reports end to end, on generated traffic: the served version's training examples are
the reference, the request log's window the current traffic. A window drawn like the training
data raises nothing; a shifted one (new topics, longer inputs, a label never trained on) raises
the drift alerts through the default rules and lists the shifted requests first."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from ftportal.models import Project
from monitoring.drift import drift_report_compute, reference_embeddings_cached
from monitoring.models import Alert, DriftStatus, Figure
from monitoring.rules import default_rules_ensure, rules_check
from registry.models import ModelVersion
from serving.models import RequestLog
from tests.monitoring.drift_builders import (
    NEW_TOPIC,
    NOW,
    logged,
    sentence,
    ticket,
    trained_version,
)
from tests.monitoring.traffic_builders import served_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    version = trained_version(project, lead, base_model)
    default_rules_ensure(version.registered_model)
    return version


def test_a_window_like_the_training_data_raises_no_drift(version: ModelVersion) -> None:
    rng = random.Random(11)
    logged(version, [ticket(rng) for _ in range(400)], seed=1)

    report = drift_report_compute(registered_model=version.registered_model, now=NOW)

    assert report is not None and report.status == DriftStatus.STABLE
    assert report.current_count == 400 and report.reference_count >= 600
    assert not any(entry["drifted"] for entry in report.figures.values()), report.figures
    rules_check(now=NOW)
    assert not Alert.objects.exists()


def test_a_shifted_window_raises_the_drift_alerts_and_lists_the_shifted_requests_first(
    version: ModelVersion,
) -> None:
    rng = random.Random(12)
    usual = [ticket(rng) for _ in range(300)]
    shifted = [(sentence(rng, NEW_TOPIC, rng.randint(30, 50)), "refund_fraud") for _ in range(150)]
    logged(version, usual, seed=2)
    shifted_ids = set(logged(version, shifted, seed=3))

    report = drift_report_compute(registered_model=version.registered_model, now=NOW)

    assert report is not None and report.status == DriftStatus.DRIFTED
    figures = report.figures
    assert figures[Figure.EMBEDDING_DRIFT_AUC]["current"] > 0.55
    assert figures[Figure.EMBEDDING_DRIFT_AUC]["drifted"]
    assert figures[Figure.LENGTH_DRIFT]["drifted"]
    assert figures[Figure.UNSEEN_LABEL_SHARE]["current"] == pytest.approx(150 / 450)
    assert figures[Figure.LABEL_DRIFT_PSI]["drifted"]
    assert figures[Figure.OOV_SHARE]["drifted"]
    top = [example["request_id"] for example in report.drifted_examples[:20]]
    assert len(top) == 20 and set(top) <= shifted_ids
    assert all(len(example["text"]) <= 300 for example in report.drifted_examples)

    rules_check(now=NOW)
    raised = {alert.rule.figure for alert in Alert.objects.select_related("rule") if alert.rule}
    assert {
        Figure.EMBEDDING_DRIFT_AUC,
        Figure.LABEL_DRIFT_PSI,
        Figure.UNSEEN_LABEL_SHARE,
    } <= raised


def test_too_few_requests_make_a_report_that_says_so(version: ModelVersion) -> None:
    rng = random.Random(13)
    logged(version, [ticket(rng) for _ in range(10)], seed=4)
    report = drift_report_compute(registered_model=version.registered_model, now=NOW)
    assert report is not None and report.status == DriftStatus.TOO_FEW
    assert report.figures == {} and report.current_count == 10


def test_requests_outside_the_window_or_served_by_another_version_are_left_out(
    version: ModelVersion, project: Project, lead: User, base_model: BaseModel
) -> None:
    rng = random.Random(14)
    logged(version, [ticket(rng) for _ in range(60)], seed=5)
    other = served_version(project, lead, base_model, model_name="other")
    logged(other, [ticket(rng) for _ in range(80)], seed=6)
    RequestLog.objects.filter(served_version=version).filter(
        request_id__in=list(
            RequestLog.objects.filter(served_version=version).values_list("request_id", flat=True)[
                :10
            ]
        )
    ).update(created_at=NOW - dt.timedelta(days=3))
    report = drift_report_compute(registered_model=version.registered_model, now=NOW)
    assert report is not None and report.current_count == 50


def test_the_references_embeddings_are_kept_and_reused_by_the_next_report(
    version: ModelVersion,
) -> None:
    rng = random.Random(15)
    logged(version, [ticket(rng) for _ in range(120)], seed=7)
    first = drift_report_compute(registered_model=version.registered_model, now=NOW)
    kept = reference_embeddings_cached(version)
    assert kept is not None and kept.vectors.shape[1] == 384
    assert len(kept.rows) == kept.vectors.shape[0] <= first.reference_count  # type: ignore[union-attr]
    second = drift_report_compute(registered_model=version.registered_model, now=NOW)
    assert first is not None and second is not None
    assert second.figures == first.figures
    again = reference_embeddings_cached(version)
    assert again is not None and (again.rows == kept.rows).all()
