"""Reconciliation (``costs.reconciliation``): each day an OpenAI endpoint's organisation cost
report (the fake API's GET /organization/costs, read with the admin key through the real SDK)
is compared with the ledger's spends billed by that endpoint; a difference above the thresholds
is flagged with its amounts, worked out by hand; a report that cannot be read changes nothing
and says why without the key; the page is for staff and for projects' managers and admins."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from catalog.models import Endpoint, EndpointKind
from costs.models import ReconciliationDay
from costs.reconciliation import (
    endpoint_costs_reconcile,
    provider_costs_reconcile,
    reconciliation_flags,
)
from costs.tasks import provider_costs_reconcile_daily
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from ftportal.models import Project
from ftportal.roles import Role
from ftportal.spending import TOKENS_PER_PRICE, Spend, SpendKind, SpendUnit, spend_record
from tests.factories import fake_endpoint

pytestmark = pytest.mark.django_db
ADMIN_ENV = "FTPORTAL_TEST_COST_ADMIN_KEY"
# The day runs are made on: the seven days before it are compared, 3 to 9 March.
TODAY = dt.date(2026, 3, 10)
WEEK = [TODAY - dt.timedelta(days=back) for back in range(7, 0, -1)]


def at(day: dt.date, hour: int = 12, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second), tzinfo=dt.UTC)


@pytest.fixture
def admin_key_allowed(settings: object) -> None:
    # The operator lists the admin key's variable among those endpoints may name.
    allowed: frozenset[str] = settings.FTPORTAL_SECRET_ENVS  # type: ignore[attr-defined]
    settings.FTPORTAL_SECRET_ENVS = allowed | {ADMIN_ENV}  # type: ignore[attr-defined]


@pytest.fixture
def endpoint(
    fake_openai: FakeOpenAIServer, admin_key_allowed: None, monkeypatch: pytest.MonkeyPatch
) -> Endpoint:
    """The fake API registered as an OpenAI endpoint whose admin named the cost report's
    variable, which this worker holds."""
    monkeypatch.setenv(ADMIN_ENV, fake_openai.admin_key)
    registered = fake_endpoint(
        fake_openai.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
    )
    registered.cost_report_secret_env = ADMIN_ENV
    registered.full_clean()  # as the admin form does
    registered.save()
    return registered


def spent(
    project: Project,
    endpoint: Endpoint | None,
    tokens: int,
    when: dt.datetime,
    *,
    price: Decimal | None = Decimal("3.00"),
) -> None:
    """``tokens`` at ``price`` dollars a million (400,000 at $3: $1.20), billed by
    ``endpoint``."""
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.SERVING,
            quantity=Decimal(tokens),
            unit=SpendUnit.TOKENS,
            price=price,
            price_per=TOKENS_PER_PRICE,
            price_source="test prices",
            event=f"test:{when.isoformat()}:{tokens}:{price}:{endpoint and endpoint.pk}",
            origin="a test",
            endpoint_id=endpoint.pk if endpoint is not None else None,
            occurred_at=when,
        )
    )


def stored() -> dict[dt.date, ReconciliationDay]:
    return {row.day: row for row in ReconciliationDay.objects.all()}


# --- comparing ------------------------------------------------------------------------------


def test_matching_days_stay_unflagged_and_a_short_ledger_day_is_flagged_with_its_difference(
    project: Project, endpoint: Endpoint, fake_openai: FakeOpenAIServer
) -> None:
    short_day, close_day, near_day, over_day = WEEK[2], WEEK[3], WEEK[4], WEEK[5]
    # One day the provider billed $3.00; the ledger holds 400,000 tokens at $3 a million,
    # $1.20, and one spend without a price.
    fake_openai.daily_costs[short_day] = Decimal("3.00")
    spent(project, endpoint, 400_000, at(short_day))
    spent(project, endpoint, 1_000, at(short_day, 13), price=None)
    # Spends of another endpoint, or at the last second of the day before, are not its.
    other = fake_endpoint("http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY")
    spent(project, other, 400_000, at(short_day))
    spent(project, endpoint, 200_000, at(WEEK[1], 23, 59, 59))  # $0.60, the day before's
    fake_openai.daily_costs[WEEK[1]] = Decimal("0.60")
    # Then $10.00 against $9.60 (3,200,000 tokens): $0.40 apart, within the $0.50.
    fake_openai.daily_costs[close_day] = Decimal("10.00")
    spent(project, endpoint, 3_200_000, at(close_day))
    # Then $20.00 against $19.10: $0.90 apart, within 5 % of $20 ($1.00).
    fake_openai.daily_costs[near_day] = Decimal("20.00")
    spent(project, endpoint, 6_366_667, at(near_day))  # 6,366,667 x 3 / 1M = $19.100001
    # Then $20.00 against $18.90: $1.10 apart, above both.
    fake_openai.daily_costs[over_day] = Decimal("20.00")
    spent(project, endpoint, 6_300_000, at(over_day))
    # Today's spend is left for tomorrow's run: the provider's figure is still partial.
    spent(project, endpoint, 400_000, at(TODAY))

    [done] = provider_costs_reconcile(days=7, today=TODAY)

    assert (done.endpoint, done.days, done.flagged, done.error) == (endpoint.name, 7, 2, "")
    days = stored()
    assert sorted(days) == WEEK
    short = days[short_day]
    assert (short.provider_usd, short.ledger_usd) == (Decimal("3.00"), Decimal("1.20"))
    assert short.difference_usd == Decimal("1.80")
    assert short.ledger_unpriced_entries == 1
    assert short.flagged
    assert short.note == (
        "The provider billed $3.00, the ledger holds $1.20: $1.80 more than the ledger, above "
        "the threshold of $0.50. 1 unpriced ledger entry that day: billed by the provider, not "
        "in the ledger's sum."
    )
    assert (days[WEEK[1]].provider_usd, days[WEEK[1]].ledger_usd) == (Decimal("0.60"),) * 2
    assert not days[WEEK[1]].flagged and days[WEEK[1]].note == ""
    assert days[close_day].difference_usd == Decimal("0.40") and not days[close_day].flagged
    assert days[near_day].ledger_usd == Decimal("19.100001")
    assert not days[near_day].flagged
    assert days[over_day].ledger_usd == Decimal("18.90") and days[over_day].flagged
    assert "$1.10 more than the ledger, above the threshold of $1.00" in days[over_day].note
    # Days neither billed nor spent on are stored as matching at $0.
    assert (days[WEEK[0]].provider_usd, days[WEEK[0]].ledger_usd) == (Decimal(0), Decimal(0))
    assert not days[WEEK[0]].flagged
    assert reconciliation_flags(WEEK[0]) == 2
    assert reconciliation_flags(over_day) == 1

    # The report was asked for with the admin key, one day a bucket, today left out.
    [request] = fake_openai.cost_report_requests
    assert request.headers["authorization"] == f"Bearer {fake_openai.admin_key}"
    assert request.query["bucket_width"] == ["1d"]
    assert request.query["start_time"] == [str(int(at(WEEK[0], 0).timestamp()))]
    assert request.query["end_time"] == [str(int(at(TODAY, 0).timestamp()))]


def test_a_day_checked_again_is_replaced_by_the_newer_comparison(
    project: Project, endpoint: Endpoint, fake_openai: FakeOpenAIServer
) -> None:
    day = WEEK[-1]
    fake_openai.daily_costs[day] = Decimal("3.00")
    spent(project, endpoint, 400_000, at(day))
    endpoint_costs_reconcile(endpoint=endpoint, days=1, today=TODAY)
    assert stored()[day].flagged

    # The spend the ledger missed arrives late (a batch written after the run).
    spent(project, endpoint, 600_000, at(day, 18))
    endpoint_costs_reconcile(endpoint=endpoint, days=1, today=TODAY)

    [row] = ReconciliationDay.objects.all()
    assert (row.ledger_usd, row.flagged, row.note) == (Decimal("3.00"), False, "")


def test_every_page_of_the_report_is_read(
    project: Project, endpoint: Endpoint, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.max_cost_page_buckets = 2  # 14 days come in 7 pages
    fortnight = [TODAY - dt.timedelta(days=back) for back in range(14, 0, -1)]
    for number, day in enumerate(fortnight, start=1):
        fake_openai.daily_costs[day] = Decimal(number)

    [done] = provider_costs_reconcile(days=14, today=TODAY)

    assert done.days == 14
    requests = fake_openai.cost_report_requests
    assert len(requests) == 7
    assert "page" not in requests[0].query
    assert [r.query["page"] for r in requests[1:]] == [[f"page_{n}"] for n in range(2, 14, 2)]
    days = stored()
    assert [days[day].provider_usd for day in fortnight] == [Decimal(n) for n in range(1, 15)]
    # Nothing spent in the ledger: every billed day is flagged, the first ($1) too ($1 > $0.50).
    assert all(days[day].flagged for day in fortnight)


# --- failing safely -------------------------------------------------------------------------


def refused_key(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> str:
    # The ordinary API key where the admin key belongs: OpenAI answers 401.
    monkeypatch.setenv(ADMIN_ENV, fake.api_key)
    return "HTTP 401"


def server_error(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> str:
    fake.fail_next_requests(1, status=503)
    return "HTTP 503"


def timeout(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> str:
    fake.stall_next_requests(1, seconds=5)
    return "did not answer in time"


@pytest.mark.parametrize("failure", [refused_key, server_error, timeout])
def test_a_report_that_cannot_be_read_is_logged_without_the_key_and_changes_nothing(
    failure: Callable[[FakeOpenAIServer, pytest.MonkeyPatch], str],
    project: Project,
    endpoint: Endpoint,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    settings: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS = 0.5  # type: ignore[attr-defined]
    day = WEEK[-1]
    earlier = ReconciliationDay.objects.create(
        endpoint=endpoint,
        day=day,
        provider_usd=Decimal("1.00"),
        ledger_usd=Decimal("1.00"),
        checked_at=at(day, 1),
    )
    fake_openai.daily_costs[day] = Decimal("3.00")
    said = failure(fake_openai, monkeypatch)

    with caplog.at_level(logging.WARNING, logger="costs.reconciliation"):
        [done] = provider_costs_reconcile(days=7, today=TODAY)

    assert done.days == 0 and done.error
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = logged.getMessage()
    assert message == done.error
    assert f"endpoint {endpoint.name}" in message and ADMIN_ENV in message and said in message
    assert "No reconciliation day was changed." in message
    assert fake_openai.admin_key not in message and fake_openai.api_key not in message
    [row] = ReconciliationDay.objects.all()
    assert (row.pk, row.provider_usd, row.checked_at) == (earlier.pk, Decimal("1.00"), at(day, 1))


def test_endpoints_without_the_variable_or_its_key_on_this_worker_are_skipped(
    project: Project,
    endpoint: Endpoint,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.daily_costs[WEEK[-1]] = Decimal("3.00")
    # An endpoint that names no cost report variable is not reconciled at all.
    Endpoint.objects.filter(pk=endpoint.pk).update(cost_report_secret_env="")
    assert provider_costs_reconcile(days=7, today=TODAY) == []
    # A disabled one neither.
    Endpoint.objects.filter(pk=endpoint.pk).update(cost_report_secret_env=ADMIN_ENV, enabled=False)
    assert provider_costs_reconcile(days=7, today=TODAY) == []
    # One whose variable this worker lacks says so, and asks the provider nothing.
    Endpoint.objects.filter(pk=endpoint.pk).update(enabled=True)
    monkeypatch.delenv(ADMIN_ENV)
    with caplog.at_level(logging.WARNING, logger="costs.reconciliation"):
        [done] = provider_costs_reconcile(days=7, today=TODAY)

    assert done.error == (
        f"Reconciliation: endpoint {endpoint.name}: the variable {ADMIN_ENV} is not set on "
        "this worker."
    )
    assert done.error in caplog.text
    assert fake_openai.cost_report_requests == []
    assert not ReconciliationDay.objects.exists()


def test_only_an_openai_endpoint_may_name_a_cost_report_variable_and_only_an_allowed_one(
    fake_openai: FakeOpenAIServer, admin_key_allowed: None
) -> None:
    endpoint = fake_endpoint(
        fake_openai.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
    )
    endpoint.cost_report_secret_env = "HOME"  # not listed in FTPORTAL_SECRET_ENVS
    with pytest.raises(ValidationError) as refused:
        endpoint.full_clean()
    assert "not a secret variable" in str(refused.value.message_dict["cost_report_secret_env"])

    compatible = fake_endpoint(fake_openai.base_url, secret_env="OPENAI_API_KEY")
    compatible.cost_report_secret_env = ADMIN_ENV
    with pytest.raises(ValidationError) as refused:
        compatible.full_clean()
    assert refused.value.message_dict["cost_report_secret_env"] == [
        "Only an OpenAI endpoint offers a cost report."
    ]


def test_admins_set_the_variable_on_the_endpoints_admin_page(
    client: Client, endpoint: Endpoint
) -> None:
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get(reverse("admin:catalog_endpoint_change", args=[endpoint.pk]))
    assert page.status_code == 200
    assert f'name="cost_report_secret_env" value="{ADMIN_ENV}"' in page.content.decode()


# --- the command and the task ---------------------------------------------------------------


def test_the_command_and_the_daily_task_reconcile_the_days_before_today(
    project: Project, endpoint: Endpoint, fake_openai: FakeOpenAIServer
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    fake_openai.daily_costs[yesterday] = Decimal("3.00")
    spent(project, endpoint, 400_000, at(yesterday))

    output = _command_output("--days", "3")

    assert output == f"{endpoint.name}: 3 days compared, 1 flagged.\n"
    assert sorted(stored()) == [today - dt.timedelta(days=back) for back in (3, 2, 1)]
    assert provider_costs_reconcile_daily() == 1
    assert len(stored()) == 7


def test_the_command_fails_when_an_endpoint_could_not_be_reconciled(
    endpoint: Endpoint, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_ENV, fake_openai.api_key)
    with pytest.raises(CommandError, match=f"Not reconciled: {endpoint.name}"):
        _command_output()
    assert not ReconciliationDay.objects.exists()


def _command_output(*args: str) -> str:
    out = StringIO()
    call_command("costs_reconcile", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- the page -------------------------------------------------------------------------------


@pytest.fixture
def checked_days(endpoint: Endpoint) -> tuple[ReconciliationDay, ReconciliationDay]:
    matching = ReconciliationDay.objects.create(
        endpoint=endpoint,
        day=WEEK[-1],
        provider_usd=Decimal("2.00"),
        ledger_usd=Decimal("2.00"),
        checked_at=at(TODAY, 1),
    )
    flagged = ReconciliationDay.objects.create(
        endpoint=endpoint,
        day=WEEK[0],
        provider_usd=Decimal("3.00"),
        ledger_usd=Decimal("1.20"),
        flagged=True,
        note="<b>The provider billed more</b>",
        checked_at=at(TODAY, 1),
    )
    return matching, flagged


@pytest.fixture
def all_days_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # The page lists the last 90 days: these March days are among them whenever this runs.
    monkeypatch.setattr("costs.reconciliation_views.SHOWN_DAYS", 100_000)


@pytest.mark.parametrize("role", [Role.MANAGER, Role.ADMIN])
def test_managers_and_admins_of_a_project_read_the_days_flagged_first(
    role: Role,
    make_member: Callable[[Role], User],
    client: Client,
    checked_days: tuple[ReconciliationDay, ReconciliationDay],
    all_days_shown: None,
) -> None:
    matching, flagged = checked_days
    client.force_login(make_member(role))

    response = client.get(reverse("costs_reconciliation"))

    assert response.status_code == 200
    page = response.content.decode()
    # The flagged day comes first though it is the older one.
    assert page.index(f'id="reconciliation-{flagged.pk}"') < page.index(
        f'id="reconciliation-{matching.pk}"'
    )
    assert 'data-flagged="true"' in page and "1.8000" in page
    # Notes are escaped like everything else.
    assert "&lt;b&gt;The provider billed more&lt;/b&gt;" in page and "<b>The" not in page
    assert f"<code>{checked_days[0].endpoint.name}</code>" in page


def test_staff_read_it_without_a_project(
    client: Client,
    checked_days: tuple[ReconciliationDay, ReconciliationDay],
    all_days_shown: None,
) -> None:
    client.force_login(User.objects.create_user("operator", password="pw", is_staff=True))
    response = client.get(reverse("costs_reconciliation"))
    assert response.status_code == 200
    assert f'id="reconciliation-{checked_days[1].pk}"' in response.content.decode()


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ML_LEAD])
def test_other_roles_are_refused(
    role: Role,
    make_member: Callable[[Role], User],
    client: Client,
    checked_days: tuple[ReconciliationDay, ReconciliationDay],
) -> None:
    client.force_login(make_member(role))
    response = client.get(reverse("costs_reconciliation"))
    assert response.status_code == 403
    assert "reconciliation-" not in response.content.decode()


def test_a_visitor_is_sent_to_sign_in(client: Client) -> None:
    response = client.get(reverse("costs_reconciliation"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
