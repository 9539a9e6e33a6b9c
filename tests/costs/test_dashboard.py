"""The managers' dashboard: spend per month, kind and project from the ledger's daily sums
(which always equal the ledger), only for projects whose costs the user may read, filtered by
days and project; each production model's savings against its evaluated alternative and its
payback; the CSV exports, whose totals match the ledger; and its API. Every figure is worked
out by hand in the comments."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Count, Q, Sum
from django.test import Client
from django.utils import timezone

from catalog.models import BaseModel, Provider
from costs.models import LedgerDay, LedgerEntry, Price, PriceOrigin
from costs.selectors import CostFilter, cost_dashboard, cost_projects
from costs.services import ledger_day
from evaluation.models import Candidate, CandidateKind
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
from registry.models import ModelVersion
from registry.services import model_version_promote
from serving.request_log import RequestLogEntry, request_logs_write
from tests.factories import finished_evaluation, registered_version

pytestmark = pytest.mark.django_db
UTC = dt.UTC
OCT_3 = dt.datetime(2026, 10, 3, 12, tzinfo=UTC)
NOV_2 = dt.datetime(2026, 11, 2, 9, tzinfo=UTC)
NOV_5 = dt.datetime(2026, 11, 5, 23, 59, tzinfo=UTC)
NOV_20 = dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
NOV_21 = dt.datetime(2026, 11, 21, 8, tzinfo=UTC)
HOSTED_BASE = "gpt-4o-mini-2024-07-18"


def spend(project: Project, event: str, at: dt.datetime, **given: object) -> Spend:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "kind": SpendKind.EVALUATION,
        "quantity": Decimal(1234),
        "unit": SpendUnit.TOKENS,
        "price": Decimal("3.00"),
        "price_per": TOKENS_PER_PRICE,
        "price_source": "test prices",
        "event": event,
        "origin": f"test spend {event}",
        "occurred_at": at,
        **given,
    }
    return Spend(**fields)  # type: ignore[arg-type]


def compute(seconds: int, price: str = "0.10") -> dict[str, object]:
    return {
        "quantity": Decimal(seconds),
        "unit": SpendUnit.COMPUTE_SECONDS,
        "price": Decimal(price),
        "price_per": SECONDS_PER_PRICE,
    }


@pytest.fixture
def other_project(db: None) -> Project:
    return Project.objects.create(name="Invoices", description="a second project")


@pytest.fixture
def stranger_project(db: None) -> Project:
    return Project.objects.create(name='=HYPERLINK("http://evil")', description="not ours")


@pytest.fixture
def manager(make_member: Callable[..., User], project: Project, other_project: Project) -> User:
    user = make_member(Role.MANAGER)
    Membership.objects.create(project=other_project, user=user, role=Role.MANAGER)
    return user


@pytest.fixture
def spends(project: Project, other_project: Project, stranger_project: Project) -> None:
    """Ticket triage: training 90 s at $0.10 an hour on Oct 3 = 90 x 0.10 / 3600 = $0.0025;
    evaluation 1,234 tokens at $3 a million on Nov 5 = $0.003702; serving 1,000,000 tokens at
    $0.30 a million on Nov 20 = $0.30; and an unpriced serving spend on Nov 21.
    Invoices: training 3,600 s at $0.10 an hour on Nov 2 = $0.10.
    The stranger's project: $5.00 of training on Nov 2, which no member of ours may see."""
    spend_record(spend(project, "a-train", OCT_3, kind=SpendKind.TRAINING, **compute(90)))
    spend_record(spend(project, "a-eval", NOV_5))
    spend_record(
        spend(
            project,
            "a-serve",
            NOV_20,
            kind=SpendKind.SERVING,
            quantity=Decimal(1_000_000),
            price=Decimal("0.30"),
        )
    )
    spend_record(spend(project, "a-serve-unpriced", NOV_21, kind=SpendKind.SERVING, price=None))
    spend_record(spend(other_project, "b-train", NOV_2, kind=SpendKind.TRAINING, **compute(3600)))
    spend_record(
        spend(stranger_project, "c-train", NOV_2, kind=SpendKind.TRAINING, **compute(3600, "5"))
    )


def octnov(*projects: Project) -> CostFilter:
    return CostFilter(
        project_ids=tuple(p.pk for p in projects),
        start=dt.date(2026, 10, 1),
        end=dt.date(2026, 11, 30),
    )


# --- the daily sums equal the ledger --------------------------------------------------------------


def test_the_daily_sums_always_equal_the_ledgers_own_sums(
    project: Project, other_project: Project, spends: None
) -> None:
    # A retried spend (same event) adds nothing to either.
    spend_record(spend(project, "a-eval", NOV_5))
    from_ledger = {
        (row["project_id"], ledger_day(row["occurred_at"]), row["kind"]): row
        for row in LedgerEntry.objects.values("project_id", "occurred_at", "kind").annotate(
            spent=Sum("amount"),
            spends=Count("id"),
            unpriced=Count("id", filter=Q(amount__isnull=True)),
        )
    }
    days = list(LedgerDay.objects.all())
    assert len(days) == len(from_ledger) == 6
    for day in days:
        ledger = from_ledger[(day.project_id, day.day, day.kind)]
        assert day.amount == (ledger["spent"] or 0)
        assert (day.entries, day.unpriced_entries) == (ledger["spends"], ledger["unpriced"])
    # Nov 21's unpriced spend is counted, and adds nothing to the amount (never $0 summed in).
    unpriced = LedgerDay.objects.get(project=project, day=dt.date(2026, 11, 21))
    assert (unpriced.amount, unpriced.entries, unpriced.unpriced_entries) == (0, 1, 1)
    assert unpriced.tokens == Decimal(1234)


def test_a_day_is_the_utc_day_of_the_spend(project: Project) -> None:
    # 23:59 UTC on Nov 5 is Nov 6 in Tokyo: the day is UTC's, whatever the site's zone.
    late = dt.datetime(2026, 11, 5, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    spend_record(spend(project, "tokyo", late))
    assert LedgerDay.objects.get().day == dt.date(2026, 11, 5)


# --- figures --------------------------------------------------------------------------------------


def test_spend_per_month_kind_and_project_worked_out_by_hand(
    project: Project, other_project: Project, spends: None
) -> None:
    dashboard = cost_dashboard(octnov(project, other_project))
    # 0.0025 + 0.003702 + 0.30 + 0.10 = 0.406202; the unpriced spend is counted, not summed.
    assert dashboard.total.amount == Decimal("0.406202")
    assert (dashboard.total.entries, dashboard.total.unpriced_entries) == (5, 1)
    by_month = {(s.month, s.kind): s.spend.amount for s in dashboard.by_month}
    assert by_month == {
        (dt.date(2026, 10, 1), SpendKind.TRAINING): Decimal("0.0025"),
        (dt.date(2026, 11, 1), SpendKind.EVALUATION): Decimal("0.003702"),
        (dt.date(2026, 11, 1), SpendKind.SERVING): Decimal("0.30"),
        (dt.date(2026, 11, 1), SpendKind.TRAINING): Decimal("0.10"),
    }
    months = [(row.month, row.total.amount) for row in dashboard.month_rows]
    assert months == [
        (dt.date(2026, 10, 1), Decimal("0.0025")),
        (dt.date(2026, 11, 1), Decimal("0.403702")),
    ]
    # The largest spender first: Ticket triage 0.306202, Invoices 0.10.
    assert [(p.project.name, p.total.amount) for p in dashboard.by_project] == [
        ("Ticket triage", Decimal("0.306202")),
        ("Invoices", Decimal("0.10")),
    ]
    drivers = [(d.project.name, d.kind, d.spend.amount) for d in dashboard.drivers]
    assert drivers[:2] == [
        ("Ticket triage", SpendKind.SERVING, Decimal("0.30")),
        ("Invoices", SpendKind.TRAINING, Decimal("0.10")),
    ]
    assert [(u.project.name, u.kind, u.entries) for u in dashboard.unpriced] == [
        ("Ticket triage", SpendKind.SERVING, 1)
    ]


def test_the_filter_keeps_its_days_and_its_project(
    project: Project, other_project: Project, spends: None
) -> None:
    november = CostFilter(
        project_ids=(project.pk, other_project.pk),
        start=dt.date(2026, 11, 1),
        end=dt.date(2026, 11, 20),
    )
    # Oct 3's 0.0025 and Nov 21's unpriced spend fall outside: 0.003702 + 0.30 + 0.10.
    total = cost_dashboard(november).total
    assert (total.amount, total.unpriced_entries) == (Decimal("0.403702"), 0)
    only_triage = CostFilter(project_ids=(project.pk,), start=NOV_2.date(), end=NOV_20.date())
    assert cost_dashboard(only_triage).total.amount == Decimal("0.303702")


def test_members_read_the_costs_of_projects_they_manage_lead_or_administer_and_no_other(
    project: Project,
    other_project: Project,
    stranger_project: Project,
    manager: User,
    make_member: Callable[..., User],
) -> None:
    assert cost_projects(manager) == [other_project, project]
    assert cost_projects(make_member(Role.ML_LEAD)) == [project]
    assert cost_projects(make_member(Role.REVIEWER)) == []
    admin = User.objects.create_superuser("site-admin", password="pw")
    assert set(cost_projects(admin)) == {project, other_project, stranger_project}


# --- production models ----------------------------------------------------------------------------


@pytest.fixture
def hosted_base(db: None) -> BaseModel:
    base, _ = BaseModel.objects.update_or_create(
        key=HOSTED_BASE,
        defaults={"display_name": "GPT-4o mini", "provider": Provider.OPENAI, "is_active": True},
    )
    return base


def in_production(project: Project, lead: User, base: BaseModel) -> ModelVersion:
    version = registered_version(project, lead, base, fine_tuned_model=f"ft:{HOSTED_BASE}:triage:x")
    run = finished_evaluation(
        version=version,
        against=None,
        scores=[1.0] * 10,
        baseline_scores=[0.0] * 10,
        user=lead,
    )
    # The alternative, prompted zero-shot, at $10 in and $30 out a million tokens; its
    # evaluated requests were 100 tokens in and 10 out (the factory's): one request costs
    # (100 x 10 + 10 x 30) / 1,000,000 = $0.0013.
    Candidate.objects.filter(run=run, kind=CandidateKind.BASE).update(
        input_usd_per_million_tokens=Decimal(10), output_usd_per_million_tokens=Decimal(30)
    )
    model_version_promote(
        model_version=version, expected_current_version=None, user=lead, reason="better"
    )
    return version


def served(
    project: Project, version: ModelVersion, at: dt.datetime, **given: object
) -> RequestLogEntry:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "requested_model": "Ticket triage/production",
        "messages": [{"role": "user", "content": "where is my invoice"}],
        "status": "ok",
        "latency_ms": 50,
        "output": "billing",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "served_version_id": version.pk,
        "created_at": at,
        **given,
    }
    return RequestLogEntry(**fields)  # type: ignore[arg-type]


def test_a_production_model_saves_against_its_alternative_and_says_when_it_pays_back(
    project: Project, lead: User, hosted_base: BaseModel
) -> None:
    version = in_production(project, lead, hosted_base)
    Price.objects.create(
        model=f"ft:{HOSTED_BASE}",
        input_usd_per_million_tokens=Decimal("0.30"),
        output_usd_per_million_tokens=Decimal("1.20"),
        origin=PriceOrigin.TABLE,
        source="test table",
        effective_from=timezone.now() - dt.timedelta(days=400),
    )
    now = timezone.now()
    request_logs_write(
        [served(project, version, now - dt.timedelta(days=day)) for day in range(4)]
        # Neither a shadow nor a refused request is traffic the alternative would have answered.
        + [
            served(project, version, now, shadow_of="req-1"),
            served(project, version, now, status="refused", prompt_tokens=None),
        ]
    )
    # Its investment: training 1,000 tokens at $3 a million = $0.003, recorded on its job,
    # and an evaluation of 500 tokens at $2 a million = $0.001, recorded on the version.
    spend_record(
        spend(
            project,
            "train",
            now - dt.timedelta(days=30),
            kind=SpendKind.TRAINING,
            quantity=Decimal(1000),
            training_job_id=version.training_job_id,
        )
    )
    spend_record(
        spend(
            project,
            "eval",
            now - dt.timedelta(days=20),
            quantity=Decimal(500),
            price=Decimal(2),
            model_version_id=version.pk,
        )
    )
    ten_days = CostFilter(
        project_ids=(project.pk,), start=(now - dt.timedelta(days=9)).date(), end=now.date()
    )
    (row,) = cost_dashboard(ten_days).production
    assert row.version == version
    # Four answered requests (the shadow's tokens are served too, and paid: five rows of
    # 1,000 in and 100 out at $0.30 and $1.20 a million = 5 x 0.00042 = $0.0021).
    assert row.requests == 4
    assert row.serving.amount == Decimal("0.0021")
    assert row.alternative is not None and row.alternative.cost_per_request == Decimal("0.0013")
    # 4 x 0.0013 = 0.0052 with the alternative; saved 0.0052 - 0.0021 = 0.0031.
    assert row.alternative_usd == Decimal("0.0052")
    assert row.savings_usd == Decimal("0.0031")
    assert row.investment.amount == Decimal("0.004")
    # Net to date 0.0031 - 0.004 = -0.0009; at 0.0031 over 10 days (0.00031 a day) that is
    # 0.0009 / 0.00031 = 2.9 days, so about 3.
    assert row.net_to_date_usd == Decimal("-0.0009")
    assert row.payback == "in about 3 days at this traffic"


# --- pages, exports, API --------------------------------------------------------------------------


def test_the_page_shows_the_managers_projects_and_not_the_strangers(
    client: Client, manager: User, spends: None
) -> None:
    client.force_login(manager)
    page = client.get("/costs/", {"start": "2026-10-01", "end": "2026-11-30"})
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="cost-total">$0.4062<' in text
    assert "Invoices" in text and "Ticket triage" in text
    assert "HYPERLINK" not in text
    assert "Ticket triage: 1 serving spend" in text


def test_a_bad_filter_is_refused_naming_the_field(
    client: Client, manager: User, stranger_project: Project
) -> None:
    client.force_login(manager)
    bad_date = client.get("/costs/", {"start": "2026-13-01"})
    assert bad_date.status_code == 400
    assert "From (start): '2026-13-01' is not a date" in html.unescape(bad_date.content.decode())
    backwards = client.get("/api/costs/", {"start": "2026-11-02", "end": "2026-11-01"})
    assert backwards.status_code == 400
    assert "is after To (end)" in backwards.json()["error"]["message"]
    theirs = client.get("/api/costs/", {"project": stranger_project.pk})
    assert theirs.status_code == 400
    assert theirs.json()["error"]["field"] == "project"


def test_a_reviewer_sees_no_costs(
    client: Client, make_member: Callable[..., User], spends: None
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    page = client.get("/costs/")
    assert page.status_code == 200 and 'id="no-cost-projects"' in page.content.decode()
    answer = client.get("/api/costs/").json()
    assert (answer["project_ids"], answer["total"]["amount_usd"]) == ([], "0.00000000")


def csv_rows(client: Client, **query: str) -> list[dict[str, str]]:
    response = client.get("/costs/export.csv", query)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_export_totals_match_the_ledger(
    client: Client,
    manager: User,
    project: Project,
    other_project: Project,
    stranger_project: Project,
    spends: None,
) -> None:
    client.force_login(manager)
    rows = csv_rows(client, start="2026-10-01", end="2026-11-30")
    assert len(rows) == 5
    ledger = LedgerEntry.objects.filter(project__in=[project, other_project]).aggregate(
        total=Sum("amount")
    )["total"]
    assert sum(Decimal(r["amount_usd"]) for r in rows if r["amount_usd"]) == ledger
    assert ledger == Decimal("0.406202")
    unpriced = [r for r in rows if r["priced"] != "yes"]
    assert [(r["event"], r["amount_usd"]) for r in unpriced] == [("a-serve-unpriced", "")]
    monthly = csv_rows(client, start="2026-10-01", end="2026-11-30", report="monthly")
    assert sum(Decimal(r["amount_usd"]) for r in monthly) == ledger


def test_a_formula_in_a_name_stays_text_in_the_csv(
    client: Client, stranger_project: Project, spends: None
) -> None:
    admin = User.objects.create_superuser("site-admin", password="pw")
    client.force_login(admin)
    rows = csv_rows(client, start="2026-10-01", end="2026-11-30", project=str(stranger_project.pk))
    assert [r["project"] for r in rows] == ['\'=HYPERLINK("http://evil")']


def test_the_api_answers_the_pages_figures_as_exact_decimals(
    client: Client, manager: User, project: Project, spends: None
) -> None:
    client.force_login(manager)
    answer = client.get(
        "/api/costs/", {"start": "2026-10-01", "end": "2026-11-30", "project": str(project.pk)}
    ).json()
    assert answer["total"] == {"amount_usd": "0.30620200", "spends": 4, "unpriced_spends": 1}
    assert [(m["month"], m["kind"], m["spend"]["amount_usd"]) for m in answer["by_month"]] == [
        ("2026-10-01", "training", "0.00250000"),
        ("2026-11-01", "evaluation", "0.00370200"),
        ("2026-11-01", "serving", "0.30000000"),
    ]
    assert client.get("/api/costs/", {"start": "2026-10-01"}).status_code == 200
    client.logout()
    assert client.get("/api/costs/").status_code in (401, 403)


def test_each_table_of_the_dashboard_exports_as_csv_with_the_pages_figures(
    client: Client, manager: User, spends: None
) -> None:
    client.force_login(manager)
    view = {"start": "2026-10-01", "end": "2026-11-30"}
    projects = csv_rows(client, **view, report="projects")
    assert [(r["project"], r["amount_usd"], r["unpriced_spends"]) for r in projects] == [
        ("Ticket triage", "0.30620200", "1"),
        ("Invoices", "0.10000000", "0"),
    ]
    assert (projects[0]["serving_usd"], projects[0]["judging_usd"]) == ("0.30000000", "")
    drivers = csv_rows(client, **view, report="drivers")
    assert len(drivers) == 4  # every driver, however many the page shows
    assert sum(Decimal(r["amount_usd"]) for r in drivers) == Decimal("0.406202")
    assert csv_rows(client, **view, report="production") == []
    refused = client.get("/costs/export.csv", {**view, "report": "everything"})
    assert refused.status_code == 400
