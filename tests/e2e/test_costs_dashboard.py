"""A manager's walk through the costs dashboard in a real browser: from the top bar to the
spend of both their projects (never a project they are not in), the month chart drawn as
stacked bars per kind, a filter to one project and one month, an unpriced spend shown as such,
and the ledger's CSV downloaded, whose amounts add up to the ledger's own total."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from playwright.sync_api import Page, expect

from costs.models import LedgerEntry
from ftportal.models import Membership, Project
from ftportal.roles import Role
from ftportal.spending import (
    SECONDS_PER_PRICE,
    TOKENS_PER_PRICE,
    Spend,
    SpendKind,
    SpendUnit,
    spend_record,
)

from .conftest import chart_state, login

pytestmark = pytest.mark.e2e
MONTH_CHART = 'canvas[data-chart="chart-spend-by-month"]'


def spend(project: Project, event: str, at: dt.datetime, **given: object) -> None:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "kind": SpendKind.SERVING,
        "quantity": Decimal(2_000_000),
        "unit": SpendUnit.TOKENS,
        "price": Decimal("0.60"),
        "price_per": TOKENS_PER_PRICE,
        "price_source": "test prices",
        "event": event,
        "origin": f"walk {event}",
        "occurred_at": at,
        **given,
    }
    spend_record(Spend(**fields))  # type: ignore[arg-type]


def test_a_manager_reads_spend_filters_it_and_exports_the_ledger(
    page: Page, live_server, project: Project, make_member: Callable[..., User]
) -> None:
    invoices = Project.objects.create(name="Invoices", description="second")
    secret = Project.objects.create(name="Secret project", description="not the manager's")
    manager = make_member(Role.MANAGER)
    Membership.objects.create(project=invoices, user=manager, role=Role.MANAGER)
    october = dt.datetime(2026, 10, 14, 10, tzinfo=dt.UTC)
    november = dt.datetime(2026, 11, 9, 10, tzinfo=dt.UTC)
    # Ticket triage: serving 2,000,000 tokens at $0.60 a million in October = $1.20, and
    # training 7,200 s at $0.50 an hour in November = $1.00, and one unpriced serving spend.
    spend(project, "t-serve", october)
    spend(
        project,
        "t-train",
        november,
        kind=SpendKind.TRAINING,
        quantity=Decimal(7200),
        unit=SpendUnit.COMPUTE_SECONDS,
        price=Decimal("0.50"),
        price_per=SECONDS_PER_PRICE,
    )
    spend(project, "t-unpriced", november, price=None)
    # Invoices: evaluation 500,000 tokens at $0.60 a million in November = $0.30.
    spend(invoices, "i-eval", november, kind=SpendKind.EVALUATION, quantity=Decimal(500_000))
    spend(secret, "s-serve", november, quantity=Decimal(10_000_000))

    login(page, live_server, manager.username)
    page.locator("#nav-costs").click()
    expect(page.get_by_role("heading", name="Costs", exact=True)).to_be_visible()
    page.locator('input[name="start"]').fill("2026-10-01")
    page.locator('input[name="end"]').fill("2026-11-30")
    page.locator("#filter-costs").click()
    # $1.20 + $1.00 + $0.30 = $2.50; the secret project's $6.00 is not the manager's to see.
    expect(page.locator("#cost-total")).to_have_text("$2.50")
    expect(page.locator("#project-table")).not_to_contain_text("Secret project")
    expect(page.locator("#unpriced-spends")).to_contain_text("Ticket triage: 1 serving spend")

    page.wait_for_function(
        "(s) => window.Chart && window.Chart.getChart(document.querySelector(s))", arg=MONTH_CHART
    )
    state = chart_state(page, MONTH_CHART)
    assert state is not None
    assert state["yTitle"] == "Spend (US dollars)"
    assert state["xTicks"] == ["2026-10", "2026-11"]
    points = {d["label"]: d["points"] for d in state["datasets"]}
    assert points == {
        "Training": [["2026-10", 0], ["2026-11", 1.0]],
        "Evaluation": [["2026-10", 0], ["2026-11", 0.3]],
        "Serving": [["2026-10", 1.2], ["2026-11", 0]],
    }
    assert (
        page.evaluate(
            "(s) => window.Chart.getChart(document.querySelector(s)).config.type", MONTH_CHART
        )
        == "bar"
    )

    # One project, one month: Ticket triage in November is its training, $1.00.
    page.locator("#cost-project").select_option(label="Ticket triage")
    page.locator('input[name="start"]').fill("2026-11-01")
    page.locator("#filter-costs").click()
    expect(page.locator("#cost-total")).to_have_text("$1.00")

    # Back to both projects, both months, and the ledger's rows as CSV.
    page.locator("#cost-project").select_option(value="")
    page.locator('input[name="start"]').fill("2026-10-01")
    page.locator("#filter-costs").click()
    expect(page.locator("#cost-total")).to_have_text("$2.50")
    with page.expect_download() as download_info:
        page.locator("#export-ledger").click()
    path = download_info.value.path()
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert sorted(row["event"] for row in rows) == ["i-eval", "t-serve", "t-train", "t-unpriced"]
    exported = sum(Decimal(row["amount_usd"]) for row in rows if row["amount_usd"])
    ledger = LedgerEntry.objects.filter(project__in=[project, invoices]).aggregate(
        total=Sum("amount")
    )["total"]
    assert exported == ledger == Decimal("2.50")
