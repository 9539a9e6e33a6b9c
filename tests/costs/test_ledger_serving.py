"""The gateway's spends: the request log's writer prices each answered row at the prices in
force (a hosted fine-tune at its base's fine-tuned price, a fallback to a hosted base model at
that model's) and reports each batch's tokens as serving spends; what answers on our own
hardware keeps no token cost, and a model without a price is unpriced, never $0."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.utils import timezone

from catalog.models import BaseModel, EndpointKind, Provider
from costs.models import LedgerEntry, Price, PriceOrigin
from ftportal.models import Project
from ftportal.spending import SpendKind
from serving.models import RequestLog
from serving.request_log import RequestLogEntry, request_logs_write
from tests.factories import fake_endpoint, registered_version

pytestmark = pytest.mark.django_db
HOSTED_BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def hosted_base(db: None) -> BaseModel:
    # Its endpoint is never called here: the rows are written as the gateway would have.
    endpoint = fake_endpoint(
        "http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
    )
    base, _ = BaseModel.objects.update_or_create(
        key=HOSTED_BASE,
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "is_active": True,
            "endpoint": endpoint,
        },
    )
    return base


def price(model: str, given: str, taken: str, *, days_ago: int = 1) -> Price:
    return Price.objects.create(
        model=model,
        input_usd_per_million_tokens=Decimal(given),
        output_usd_per_million_tokens=Decimal(taken),
        origin=PriceOrigin.TABLE,
        source="test table",
        effective_from=timezone.now() - timedelta(days=days_ago),
    )


def answered(project: Project, tokens: tuple[int, int], **served: object) -> RequestLogEntry:
    return RequestLogEntry(
        project_id=project.pk,
        requested_model="Ticket triage/production",
        messages=[{"role": "user", "content": "where is my invoice"}],
        status="ok",
        latency_ms=50,
        output="billing",
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        **served,  # type: ignore[arg-type]
    )


def test_a_hosted_fine_tune_is_priced_per_row_and_spent_per_batch(
    project: Project, lead: User, hosted_base: BaseModel
) -> None:
    version = registered_version(
        project, lead, hosted_base, fine_tuned_model=f"ft:{HOSTED_BASE}:acme:triage:x1"
    )
    price(f"ft:{HOSTED_BASE}", "0.30", "1.20")
    entries = [
        answered(project, (100, 10), served_version_id=version.pk),
        answered(project, (200, 20), served_version_id=version.pk),
        answered(project, (300, 30), served_version_id=version.pk),
    ]
    refused = RequestLogEntry(
        project_id=project.pk,
        requested_model="Ticket triage/nothing",
        messages=[],
        status="refused",
        latency_ms=1,
        error="unknown model",
    )
    request_logs_write([*entries, refused])

    costs = {
        row.request_id: row.cost
        for row in RequestLog.objects.filter(request_id__in=[e.request_id for e in entries])
    }
    # 100 x 0.30 + 10 x 1.20 = 42 dollars a million requests' tokens: $0.000042; twice; thrice.
    assert [costs[e.request_id] for e in entries] == [
        Decimal("0.000042"),
        Decimal("0.000084"),
        Decimal("0.000126"),
    ]
    assert RequestLog.objects.get(request_id=refused.request_id).cost is None

    spends = LedgerEntry.objects.filter(kind=SpendKind.SERVING)
    given, taken = spends.get(event__endswith=":input"), spends.get(event__endswith=":output")
    assert (given.quantity, given.amount) == (600, Decimal("0.00018"))  # 600 x 0.30 / 1M
    assert (taken.quantity, taken.amount) == (60, Decimal("0.000072"))  # 60 x 1.20 / 1M
    assert given.model_version == version
    assert spends.aggregate(total=Sum("amount"))["total"] == Decimal("0.000252")  # the rows' sum
    # Billed by the endpoint the gateway calls the fine-tune through: its base model's.
    assert hosted_base.endpoint is not None
    assert {spend.endpoint for spend in spends} == {hosted_base.endpoint}


def test_a_fallback_to_a_hosted_base_model_is_priced_at_that_models_price(
    project: Project, hosted_base: BaseModel
) -> None:
    price(HOSTED_BASE, "0.15", "0.60")
    entry = answered(project, (1000, 100), served_base_model_id=hosted_base.pk)
    request_logs_write([entry])
    # 1000 x 0.15 + 100 x 0.60 = 210 per million: $0.00021.
    assert RequestLog.objects.get(request_id=entry.request_id).cost == Decimal("0.00021")
    assert LedgerEntry.objects.filter(kind=SpendKind.SERVING).count() == 2
    assert hosted_base.endpoint is not None
    assert {spend.endpoint for spend in LedgerEntry.objects.filter(kind=SpendKind.SERVING)} == {
        hosted_base.endpoint
    }


def test_a_model_without_a_price_is_unpriced_and_a_local_version_spends_no_tokens(
    project: Project, lead: User, hosted_base: BaseModel, base_model: BaseModel
) -> None:
    hosted = registered_version(
        project, lead, hosted_base, fine_tuned_model=f"ft:{HOSTED_BASE}:acme:triage:x2"
    )
    local = registered_version(project, lead, base_model, adapter_dir="/adapters/local")
    unpriced = answered(project, (100, 10), served_version_id=hosted.pk)
    on_our_hardware = answered(project, (100, 10), served_version_id=local.pk)
    request_logs_write([unpriced, on_our_hardware])

    assert RequestLog.objects.get(request_id=unpriced.request_id).cost is None
    assert RequestLog.objects.get(request_id=on_our_hardware.request_id).cost is None
    spends = LedgerEntry.objects.filter(kind=SpendKind.SERVING)
    assert spends.count() == 2 and all(spend.amount is None for spend in spends)
    assert all(spend.model_version == hosted for spend in spends)
    assert all("no price" in spend.price_source for spend in spends)
    # Unpriced, the spends still name the endpoint that bills them (reconciliation counts them).
    assert hosted_base.endpoint is not None
    assert all(spend.endpoint == hosted_base.endpoint for spend in spends)


def test_a_later_price_does_not_reprice_what_was_written(
    project: Project, lead: User, hosted_base: BaseModel
) -> None:
    version = registered_version(
        project, lead, hosted_base, fine_tuned_model=f"ft:{HOSTED_BASE}:acme:triage:x3"
    )
    price(f"ft:{HOSTED_BASE}", "0.30", "1.20", days_ago=2)
    first = answered(project, (100, 10), served_version_id=version.pk)
    request_logs_write([first])
    price(f"ft:{HOSTED_BASE}", "3.00", "12.00", days_ago=0)
    second = answered(project, (100, 10), served_version_id=version.pk)
    request_logs_write([second])

    assert RequestLog.objects.get(request_id=first.request_id).cost == Decimal("0.000042")
    assert RequestLog.objects.get(request_id=second.request_id).cost == Decimal("0.00042")
    amounts = sorted(
        amount
        for amount in LedgerEntry.objects.filter(kind=SpendKind.SERVING).values_list(
            "amount", flat=True
        )
        if amount is not None
    )
    # 10 x 1.20, 100 x 0.30, 10 x 12 and 100 x 3 dollars a million tokens.
    assert amounts == [
        Decimal("0.000012"),
        Decimal("0.00003"),
        Decimal("0.00012"),
        Decimal("0.0003"),
    ]
