"""The token prices page: what is in force for the catalog's models, a lead's manual price
(in force from then on, recorded with who and why, never re-pricing the ledger), each bad
field refused by name with nothing stored, and who may read and set prices."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from catalog.models import BaseModel
from costs.models import LedgerEntry, Price, PriceOrigin
from costs.prices import price_in_force
from ftportal.roles import Role
from ftportal.spending import TOKENS_PER_PRICE, Spend, SpendKind, SpendUnit, spend_record

pytestmark = pytest.mark.django_db
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def table_price(db: None) -> Price:
    BaseModel.objects.update_or_create(
        key=MODEL, defaults={"display_name": "GPT-4o mini", "provider": "openai"}
    )
    return Price.objects.create(
        model=MODEL,
        input_usd_per_million_tokens=Decimal("0.15"),
        output_usd_per_million_tokens=Decimal("0.60"),
        origin=PriceOrigin.TABLE,
        source="litellm table",
        effective_from=timezone.now() - dt.timedelta(days=30),
    )


def test_a_lead_sets_a_price_that_wins_from_now_and_leaves_the_ledger_alone(
    client: Client, make_member: Callable[..., User], project: object, table_price: Price
) -> None:
    spend_record(
        Spend(
            project_id=project.pk,  # type: ignore[attr-defined]
            kind=SpendKind.SERVING,
            quantity=Decimal(1_000_000),
            unit=SpendUnit.TOKENS,
            price=Decimal("0.15"),
            price_per=TOKENS_PER_PRICE,
            price_source="table",
            event="before-override",
            origin="test",
        )
    )
    lead = make_member(Role.ML_LEAD)
    client.force_login(lead)
    page = client.get("/costs/prices/")
    assert page.status_code == 200
    assert f"<code>{MODEL}</code>" in page.content.decode()
    answer = client.post(
        "/costs/prices/",
        {
            "model": MODEL,
            "input_usd_per_million": "0.10",
            "output_usd_per_million": "0.40",
            "reason": "negotiated rate, contract 2026-11",
        },
    )
    assert answer.status_code == 302
    now = price_in_force(MODEL, timezone.now())
    assert now is not None and now.origin == PriceOrigin.MANUAL
    assert (now.input_usd_per_million_tokens, now.output_usd_per_million_tokens) == (
        Decimal("0.10"),
        Decimal("0.40"),
    )
    assert now.created_by == lead and "negotiated rate" in now.source
    # A moment before it, the table's price was in force, and the ledger's row keeps $0.15.
    before = price_in_force(MODEL, now.effective_from - dt.timedelta(seconds=1))
    assert before == table_price
    assert LedgerEntry.objects.get().amount == Decimal("0.15")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "", "Model (model)"),
        ("input_usd_per_million", "ten", "Input price (input_usd_per_million): 'ten' is not"),
        ("output_usd_per_million", "-1", "Output price (output_usd_per_million): give dollars"),
        ("input_usd_per_million", "0.123456789", "at most 8 decimal places"),
        ("reason", " ", "Reason (reason)"),
    ],
)
def test_a_bad_field_is_refused_by_name_and_nothing_is_stored(
    client: Client,
    make_member: Callable[..., User],
    table_price: Price,
    field: str,
    value: str,
    message: str,
) -> None:
    client.force_login(make_member(Role.ML_LEAD))
    form = {
        "model": MODEL,
        "input_usd_per_million": "0.10",
        "output_usd_per_million": "0.40",
        "reason": "negotiated",
        field: value,
    }
    answer = client.post("/costs/prices/", form)
    assert answer.status_code == 400
    assert message in html.unescape(answer.content.decode())
    assert Price.objects.filter(origin=PriceOrigin.MANUAL).count() == 0


def test_a_manager_reads_prices_but_sets_none_and_a_reviewer_reads_none(
    client: Client, make_member: Callable[..., User], table_price: Price
) -> None:
    client.force_login(make_member(Role.MANAGER))
    page = client.get("/costs/prices/")
    assert page.status_code == 200 and 'id="price-form"' not in page.content.decode()
    refused = client.post(
        "/costs/prices/",
        {
            "model": MODEL,
            "input_usd_per_million": "0",
            "output_usd_per_million": "0",
            "reason": "x",
        },
    )
    assert refused.status_code == 403
    client.force_login(make_member(Role.REVIEWER))
    assert client.get("/costs/prices/").status_code == 403
    assert Price.objects.filter(origin=PriceOrigin.MANUAL).count() == 0
