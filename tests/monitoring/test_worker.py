"""The scheduled monitors through the real Celery worker: the drift task (on the inference
queue) stores a report for every production alias, gives it the default rules and raises the
drift alert its report calls for; the scheduled rule check then raises it again."""

from __future__ import annotations

import random

import pytest
from django.utils import timezone

from monitoring.models import Alert, AlertRule, DriftReport, DriftStatus, Figure
from monitoring.tasks import alert_rules_check, drift_reports_compute
from tests.conftest import wait_until
from tests.monitoring.drift_builders import NEW_TOPIC, logged, sentence, trained_version

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_worker_reports_drift_and_the_rule_check_raises_its_alert(
    celery_worker_process, project, lead, base_model
):
    version = trained_version(project, lead, base_model, examples=200)
    rng = random.Random(21)
    shifted = [(sentence(rng, NEW_TOPIC, rng.randint(30, 50)), "refund_fraud") for _ in range(80)]
    logged(version, shifted, seed=1, now=timezone.now())

    drift_reports_compute.delay()
    wait_until(
        lambda: Alert.objects.filter(rule__figure=Figure.UNSEEN_LABEL_SHARE).exists(),
        timeout=180,
        what="the unseen-label alert from the drift task's own rule check",
    )
    report = DriftReport.objects.get(registered_model=version.registered_model)
    assert report.status == DriftStatus.DRIFTED and report.current_count == 80
    assert AlertRule.objects.filter(registered_model=version.registered_model).count() == 7
    alert = Alert.objects.get(rule__figure=Figure.UNSEEN_LABEL_SHARE)
    assert alert.times_raised == 1

    alert_rules_check.delay()
    wait_until(
        lambda: Alert.objects.get(pk=alert.pk).times_raised == 2,
        timeout=120,
        what="the scheduled rule check to raise the unseen-label alert again",
    )
