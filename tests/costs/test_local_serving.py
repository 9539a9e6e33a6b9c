"""The local model server's machine time as serving spends: what each version's adapter decoded
since the last reading, at the server host's rate (else the site's), one row per reading and
adapter, nothing twice for a repeated reading, a new series after a restart; the bare base
model and unknown names are not a project's spend."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from catalog.models import BaseModel
from costs.local_serving import local_serving_spends_record
from costs.models import LedgerEntry
from ftportal.models import Project
from ftportal.spending import SpendKind, SpendUnit
from providers.local.server_metrics import ServerBusy
from registry.models import ModelVersion
from tests.factories import registered_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    return registered_version(project, lead, base_model, adapter_dir="/artifacts/a/job1")


def reading(instance: str, seconds: dict[str, float], rate: str | None = "0.72") -> ServerBusy:
    return ServerBusy(
        instance=instance,
        host="gpu-box",
        usd_per_hour=Decimal(rate) if rate else None,
        busy_seconds=seconds,
    )


def spends(version: ModelVersion) -> list[tuple[Decimal, Decimal | None]]:
    rows = LedgerEntry.objects.filter(model_version=version, kind=SpendKind.SERVING)
    return [(row.quantity, row.amount) for row in rows.order_by("id")]


def test_each_reading_spends_what_the_adapter_decoded_since_the_last(
    version: ModelVersion,
) -> None:
    name = f"version-{version.pk}"
    # 12.5 s at $0.72 an hour: 12.5 x 0.72 / 3600 = $0.0025.
    assert local_serving_spends_record(reading("a", {name: 12.5, "SmolLM2-135M": 9.0})) == 1
    # Read again at 20.0 s: 7.5 s more, 7.5 x 0.72 / 3600 = $0.0015.
    local_serving_spends_record(reading("a", {name: 20.0}))
    # The same reading again (a retried task) spends nothing.
    assert local_serving_spends_record(reading("a", {name: 20.0})) == 0
    # Restarted: a new instance counts from zero, 3 s = $0.0006.
    local_serving_spends_record(reading("b", {name: 3.0}))
    assert spends(version) == [
        (Decimal("12.5"), Decimal("0.0025")),
        (Decimal("7.5"), Decimal("0.0015")),
        (Decimal("3"), Decimal("0.0006")),
    ]
    first = LedgerEntry.objects.filter(model_version=version).order_by("id").first()
    assert first is not None
    assert (first.unit, first.project_id) == (
        SpendUnit.COMPUTE_SECONDS,
        version.registered_model.project_id,
    )
    assert first.price_source == "FTPORTAL_LOCAL_USD_PER_HOUR on the model server's host gpu-box"
    # The bare base model's time is no project's.
    assert LedgerEntry.objects.count() == 3


@override_settings(FTPORTAL_LOCAL_USD_PER_HOUR="0.36")
def test_a_server_without_a_rate_is_priced_at_the_sites(version: ModelVersion) -> None:
    local_serving_spends_record(
        reading("c", {f"version-{version.pk}": 10.0, "version-999999999": 5.0}, rate=None)
    )
    # 10 s at $0.36 an hour: $0.001; the unknown version is skipped.
    assert spends(version) == [(Decimal("10"), Decimal("0.001"))]
    assert "this site's FTPORTAL_LOCAL_USD_PER_HOUR" in LedgerEntry.objects.get().price_source
