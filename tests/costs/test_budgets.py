"""Budgets (issue 16 item 5): the month's spend against a project's budget, summed exactly from
the ledger (unpriced spends counted, never $0); alerts at 80 % and 100 % that fire once each,
after commit, e-mailed to the project's managers, leads and admins; a hard cap that refuses new
training jobs and hosted evaluations with a message naming the budget, and the gateway's chat
requests with a 429 until the budget is raised; the budget's page and API for every role."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.models import BaseModel
from costs import budget_alerts
from costs.budget_alerts import budget_check
from costs.budgets import budget_remove, budget_set, budget_status, month_end, month_of
from costs.models import Budget, BudgetAlert, Price, PriceOrigin
from datasets.models import DatasetVersion
from evaluation.models import CandidateKind, EvalRun, EvalSplit
from evaluation.services import CandidateSpec, JudgeSpec, eval_run_create
from fakes.chat_servers import (
    FakeOpenAIChatServer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from ftportal.spending import (
    SECONDS_PER_PRICE,
    TOKENS_PER_PRICE,
    Spend,
    SpendingRefused,
    SpendKind,
    SpendUnit,
    spend_record,
    spending_refusal,
)
from serving import admission
from serving.generations import cache_key, redis_client, redis_url
from serving.refusals import project_refusal
from tests.evaluation.test_runs import held_out_version
from tests.factories import fake_endpoint, frozen_version
from tests.serving.gateway_server import fake_chat_key, running_gateway  # noqa: F401
from tests.serving.test_gateway import BASE, QUESTION, app_key, client, hosted_version, promote
from training.models import TrainingJob
from training.services import training_job_create

pytestmark = pytest.mark.django_db
CHAT_KEY_ENV = "FAKE_CHAT_KEY"
_events = iter(range(1, 1_000_000))


@pytest.fixture(autouse=True)
def no_refusal_left_in_redis() -> Iterator[None]:
    """The gateway's copies of refusals live until the month ends: none outlives its test."""
    yield
    url = redis_url()
    if url is not None:
        keys = redis_client(url).scan_iter(match=cache_key("serving:refused:*"))
        for key in keys:
            redis_client(url).delete(key)


def dollars_spent(
    project: Project, amount: str, *, at: dt.datetime | None = None, priced: bool = True
) -> Spend:
    """A spend of exactly ``amount`` dollars: that many million tokens at $1 a million."""
    spend = Spend(
        project_id=project.pk,
        kind=SpendKind.EVALUATION,
        quantity=Decimal(amount) * TOKENS_PER_PRICE,
        unit=SpendUnit.TOKENS,
        price=Decimal(1) if priced else None,
        price_per=TOKENS_PER_PRICE,
        price_source="test: $1 a million tokens" if priced else "test: no price",
        event=f"test-spend:{next(_events)}",
        origin="a test",
        occurred_at=at or timezone.now(),
    )
    spend_record(spend)
    return spend


def member_with_email(
    make_member: Callable[..., User], role: Role, email: str, **where: Any
) -> User:
    user = make_member(role, **where)
    user.email = email
    user.save(update_fields=["email"])
    return user


@pytest.fixture
def alerted(make_member: Callable[..., User], project: Project) -> list[str]:
    """Members of every role, with and without an address, and a manager elsewhere: the
    addresses an alert must reach."""
    member_with_email(make_member, Role.MANAGER, "manager@example.com")
    member_with_email(make_member, Role.ML_LEAD, "lead@example.com")
    member_with_email(make_member, Role.ADMIN, "admin@example.com")
    member_with_email(make_member, Role.REVIEWER, "reviewer@example.com")
    make_member(Role.ML_LEAD)  # no address
    elsewhere = Project.objects.create(name="Elsewhere")
    member_with_email(make_member, Role.MANAGER, "other@example.com", target=elsewhere)
    return ["admin@example.com", "lead@example.com", "manager@example.com"]


# --- the month's figures, worked out by hand ------------------------------------------------------


def test_the_months_spend_sums_the_ledger_of_the_calendar_month_and_counts_unpriced_apart(
    project: Project, lead: User
) -> None:
    now = dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC)
    march_first = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    march_last = dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=dt.UTC)
    # 1,000,000 tokens at $3 a million: $3.00.
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.SERVING,
            quantity=Decimal(1_000_000),
            unit=SpendUnit.TOKENS,
            price=Decimal("3.00"),
            price_per=TOKENS_PER_PRICE,
            price_source="test",
            event="march:tokens",
            origin="a test",
            occurred_at=march_first,
        )
    )
    # 3,600 s of worker time at $2.50 an hour: $2.50.
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.TRAINING,
            quantity=Decimal(3600),
            unit=SpendUnit.COMPUTE_SECONDS,
            price=Decimal("2.50"),
            price_per=SECONDS_PER_PRICE,
            price_source="test",
            event="march:seconds",
            origin="a test",
            occurred_at=march_last,
        )
    )
    # 1,234 tokens at $3 a million: $0.003702.
    dollars_spent(project, "0.001234", at=march_last)
    dollars_spent(project, "0.001234", at=march_last)
    dollars_spent(project, "7", at=march_last, priced=False)  # unpriced: counted, not summed
    dollars_spent(project, "5", at=march_first - dt.timedelta(seconds=1))  # February
    dollars_spent(project, "5", at=march_last + dt.timedelta(seconds=1))  # April
    other = Project.objects.create(name="Other")
    dollars_spent(other, "9", at=march_first)

    budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)
    status = budget_status(project, now=now)

    # 3.00 + 2.50 + 0.001234 + 0.001234 = 5.502468 of $10.00: 55.02468 %, shown as 55.0.
    assert status.month == dt.date(2026, 3, 1)
    assert status.spent_usd == Decimal("5.502468")
    assert status.unpriced_entries == 1
    assert status.share == Decimal("0.5502468")
    assert status.percent == Decimal("55.0")
    assert (status.warning, status.reached, status.over_cap) == (False, False, False)


def test_a_month_ends_at_the_first_moment_of_the_next_one_in_utc() -> None:
    eastern = dt.timezone(dt.timedelta(hours=-5))
    # 21:00 on 31 December in New York is already January in UTC.
    assert month_of(dt.datetime(2026, 12, 31, 21, tzinfo=eastern)) == dt.date(2027, 1, 1)
    assert month_end(dt.date(2026, 12, 1)) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert month_end(dt.date(2028, 2, 1)) == dt.datetime(2028, 3, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0", "positive"),
        ("-5", "positive"),
        ("abc", "positive"),
        ("NaN", "positive"),
        ("12.345", "two decimal places"),
        ("1000000000000", "at most"),
        ("1E+999999", "at most"),
    ],
)
def test_a_budget_must_be_a_positive_amount_of_dollars_and_cents(
    project: Project, lead: User, given: str, message: str
) -> None:
    with pytest.raises(ApplicationError, match=message) as refused:
        budget_set(project=project, monthly_usd=given, hard_cap=True, user=lead)
    assert refused.value.extra == {"field": "monthly_usd"}
    assert "monthly_usd" in refused.value.message
    assert not Budget.objects.exists()


# --- alerts ---------------------------------------------------------------------------------------


def test_each_alert_fires_once_after_commit_and_is_emailed_to_managers_leads_and_admins(
    project: Project,
    lead: User,
    alerted: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(project=project, monthly_usd="10.00", hard_cap=False, user=lead)
    with django_capture_on_commit_callbacks(execute=True):
        dollars_spent(project, "7.99")
    assert not BudgetAlert.objects.exists()  # 79.9 %

    with django_capture_on_commit_callbacks(execute=True):
        dollars_spent(project, "0.01")  # $8.00: exactly 80 %
    [eighty] = BudgetAlert.objects.all()
    assert (eighty.threshold_percent, eighty.spent_usd, eighty.budget_usd) == (
        80,
        Decimal("8.00"),
        Decimal("10.00"),
    )
    assert eighty.month == month_of(eighty.fired_at)
    assert eighty.notified.splitlines() == alerted
    assert sorted(address for message in mail.outbox for address in message.to) == alerted
    assert all(len(message.to) == 1 for message in mail.outbox)  # nobody sees the others
    assert mail.outbox[0].subject == "[ftportal] Ticket triage reached 80 % of its monthly budget"
    assert "has spent $8.00 of its $10.00 budget" in mail.outbox[0].body

    for _ in range(3):  # more spends: $9.50, no new alert
        with django_capture_on_commit_callbacks(execute=True):
            dollars_spent(project, "0.50")
    assert BudgetAlert.objects.count() == 1
    assert len(mail.outbox) == 3

    with django_capture_on_commit_callbacks(execute=True):
        dollars_spent(project, "0.50")  # $10.00: 100 %
    with django_capture_on_commit_callbacks(execute=True):
        dollars_spent(project, "4")  # $14.00: still one 100 % alert
    assert sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)) == [80, 100]
    hundred = BudgetAlert.objects.get(threshold_percent=100)
    assert hundred.spent_usd == Decimal("10.00")
    assert len(mail.outbox) == 6
    assert "no hard cap: spending goes on" in mail.outbox[-1].body
    # Checked again (another process, a retried task): nothing fires twice.
    assert budget_check(project.pk) == []
    assert len(mail.outbox) == 6


def test_a_rolled_back_spend_fires_nothing_and_a_kept_one_after_it_still_does(
    project: Project, lead: User, alerted: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)

    class Failed(Exception):
        pass

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(Failed),
        transaction.atomic(),
    ):
        dollars_spent(project, "9")
        raise Failed()
    assert not BudgetAlert.objects.exists()
    assert mail.outbox == []

    # The check registered inside a savepoint goes with it; the spend after it, in the
    # enclosing transaction, must still be checked (not skipped as "already registered").
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        with pytest.raises(Failed), transaction.atomic():
            dollars_spent(project, "5")
            raise Failed()
        dollars_spent(project, "8.50")
    [alert] = BudgetAlert.objects.all()
    assert (alert.threshold_percent, alert.spent_usd) == (80, Decimal("8.50"))
    assert len(mail.outbox) == len(alerted)


def test_a_transaction_of_many_spends_checks_each_project_once(
    project: Project, django_capture_on_commit_callbacks: Any
) -> None:
    other = Project.objects.create(name="Other")
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for _ in range(5):
            dollars_spent(project, "1")
            dollars_spent(other, "1")
    checks = [c for c in callbacks if isinstance(c, budget_alerts._BudgetCheck)]
    assert sorted(check.project_id for check in checks) == sorted([project.pk, other.pk])


def test_an_alert_another_process_fired_is_not_emailed_again(
    project: Project, lead: User, alerted: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)
        dollars_spent(project, "9")
    assert len(mail.outbox) == len(alerted)
    mail.outbox.clear()
    # As if two processes read "80 % not fired" at once: the second's insert finds the row.
    BudgetAlert.objects.filter(threshold_percent=80).update(notified="")
    budget_alerts._alerts_fire(budget_status(project))
    assert mail.outbox == []
    assert BudgetAlert.objects.count() == 1


def test_a_failing_mail_server_keeps_the_alert_in_app(
    project: Project,
    lead: User,
    alerted: list[str],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def refused(*args: object, **kwargs: object) -> int:
        raise ConnectionRefusedError("no mail server")

    monkeypatch.setattr(budget_alerts, "send_mail", refused)
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)
        dollars_spent(project, "10")
    assert sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)) == [80, 100]
    assert set(BudgetAlert.objects.values_list("notified", flat=True)) == {""}


# --- the hard cap: training and evaluation --------------------------------------------------------

CAPPED_MESSAGE = (
    "Project Ticket triage has spent $10.00 of its $10.00 monthly budget (hard cap) in {month}: "
    "new training jobs, hosted evaluations and gateway requests are refused until next month "
    "or until a lead raises the budget."
)


def capped_message() -> str:
    return CAPPED_MESSAGE.format(month=f"{month_of(dt.datetime.now(dt.UTC)):%B %Y}")


def test_a_capped_project_refuses_a_training_job_with_the_budgets_message(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = frozen_version(project, lead)
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "9.99")
    # Under the cap: launched.
    assert training_job_create(
        project=project, dataset_version=version, base_model=base_model, user=lead
    )

    dollars_spent(project, "0.01")
    with pytest.raises(SpendingRefused) as refused:
        training_job_create(
            project=project, dataset_version=version, base_model=base_model, user=lead
        )
    assert refused.value.message == capped_message()
    assert isinstance(refused.value, ConflictError) and refused.value.status_code == 409
    assert TrainingJob.objects.count() == 1


def test_a_budget_without_a_hard_cap_refuses_nothing(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)
    dollars_spent(project, "25")
    assert spending_refusal(project.pk) is None
    training_job_create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        user=lead,
    )
    assert TrainingJob.objects.count() == 1


def test_the_training_api_answers_409_with_the_budgets_message(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = frozen_version(project, lead)
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "10")
    api = Client()
    api.force_login(lead)
    answer = api.post(
        f"/api/projects/{project.pk}/training-jobs/",
        {"dataset_version": version.pk, "base_model": base_model.key},
        content_type="application/json",
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == {"message": capped_message(), "reason": "budget_hard_cap"}


@pytest.fixture
def hosted_spec(monkeypatch: pytest.MonkeyPatch, db: None) -> CandidateSpec:
    monkeypatch.setenv(CHAT_KEY_ENV, "a key")
    return CandidateSpec(
        kind=CandidateKind.OPENAI_COMPATIBLE,
        api_model="gpt-4o-mini",
        endpoint=fake_endpoint("http://127.0.0.1:9/v1", secret_env=CHAT_KEY_ENV),
        input_usd_per_million_tokens=Decimal("0.30"),
        output_usd_per_million_tokens=Decimal("1.20"),
    )


def evaluation_of(
    version: DatasetVersion,
    lead: User,
    *candidates: CandidateSpec,
    judge: JudgeSpec | None = None,
) -> EvalRun:
    return eval_run_create(
        project=version.dataset.project,
        dataset_version=version,
        split=EvalSplit.ALL,
        candidates=list(candidates),
        user=lead,
        judge=judge,
    )


def test_a_capped_project_refuses_a_hosted_evaluation_and_still_runs_a_local_one(
    project: Project, lead: User, base_model: BaseModel, hosted_spec: CandidateSpec
) -> None:
    version = held_out_version(project, lead)
    local = CandidateSpec(kind=CandidateKind.BASE, base_model=base_model)
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "9.99")
    assert evaluation_of(version, lead, hosted_spec)  # under the cap

    dollars_spent(project, "0.01")
    with pytest.raises(SpendingRefused) as refused:
        evaluation_of(version, lead, local, hosted_spec)
    assert refused.value.message == capped_message()
    # Two local candidates judged by a hosted model: billed per token too.
    hosted_judge = JudgeSpec(
        kind=CandidateKind.OPENAI_COMPATIBLE,
        model="gpt-4o-mini",
        endpoint=hosted_spec.endpoint,
    )
    with pytest.raises(SpendingRefused):
        evaluation_of(version, lead, local, local, judge=hosted_judge)
    assert EvalRun.objects.count() == 1

    # On our own hardware only: worker time, not a hosted evaluation.
    assert evaluation_of(version, lead, local)
    assert EvalRun.objects.count() == 2


def test_raising_the_budget_or_removing_it_lifts_the_cap(project: Project, lead: User) -> None:
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "12.50")
    assert spending_refusal(project.pk) == capped_message().replace("spent $10.00", "spent $12.50")
    budget_set(project=project, monthly_usd="20", hard_cap=True, user=lead)
    assert spending_refusal(project.pk) is None
    budget_set(project=project, monthly_usd="12.50", hard_cap=True, user=lead)
    assert spending_refusal(project.pk) is not None
    budget_remove(project=project, user=lead)
    assert spending_refusal(project.pk) is None


def test_last_months_spend_does_not_count_against_this_month(project: Project, lead: User) -> None:
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    last_month = month_of(dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
    dollars_spent(project, "50", at=dt.datetime.combine(last_month, dt.time(12), tzinfo=dt.UTC))
    assert spending_refusal(project.pk) is None
    assert budget_status(project).spent_usd == 0


# --- the hard cap: the gateway --------------------------------------------------------------------


def fine_tune_priced(usd_per_million: str) -> None:
    """The hosted fine-tune's tokens at ``usd_per_million`` both ways (priced, so that the
    month's figures do not depend on when the request log's writer stores them)."""
    Price.objects.create(
        model=f"ft:{BASE}",
        input_usd_per_million_tokens=Decimal(usd_per_million),
        output_usd_per_million_tokens=Decimal(usd_per_million),
        origin=PriceOrigin.MANUAL,
        source="test",
        effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )


@pytest.fixture
def served(
    transactional_db: None, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> Iterator[str]:
    """The gateway's origin, the project's production alias serving a hosted version."""
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    with running_gateway() as origin:
        yield origin


def ask_production(origin: str, key: str) -> str:
    answer = client(origin, key).chat.completions.create(
        model="Ticket triage/production", messages=QUESTION
    )
    return answer.choices[0].message.content or ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fake_chat_key")
def test_the_gateway_answers_429_naming_the_budget_until_it_is_raised(
    served: str, project: Project, lead: User
) -> None:
    fine_tune_priced("0.01")  # a few tokens: a millionth of a cent, shown as $10.00 below
    key = app_key(project, lead)
    assert ask_production(served, key)  # read from Postgres, then kept

    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    dollars_spent(project, "10")  # committed at once: the check refuses the project
    assert project_refusal(project.pk) == capped_message()

    for _ in range(2):  # the kept key (one Redis round trip), then the key read again
        with pytest.raises(openai.RateLimitError) as refused:
            ask_production(served, key)
        assert refused.value.status_code == 429
        assert refused.value.body == {
            "message": capped_message(),
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
        assert refused.value.response.headers["x-should-retry"] == "false"
        admission._kept.clear()
    # Spending nothing, the model list still answers.
    assert [model.id for model in client(served, key).models.list()]

    budget_set(project=project, monthly_usd="20", hard_cap=True, user=lead)
    assert project_refusal(project.pk) is None
    assert ask_production(served, key)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fake_chat_key")
def test_the_gateways_own_spends_reaching_the_cap_refuse_its_next_requests(
    served: str, project: Project, lead: User
) -> None:
    # A price no one pays, so that one request's tokens pass a budget of a cent.
    fine_tune_priced("100000")
    budget_set(project=project, monthly_usd="0.01", hard_cap=True, user=lead)
    key = app_key(project, lead)
    assert ask_production(served, key)
    # The request log's writer stores the batch (every 200 ms) and its spends; the check after
    # its commit refuses the project.
    # Generous: both cores may be busy with other tests; nothing here waits on a timer.
    deadline = time.monotonic() + 30
    while True:
        try:
            ask_production(served, key)
        except openai.RateLimitError as refused:
            assert "monthly budget (hard cap)" in refused.message
            break
        assert time.monotonic() < deadline, "the gateway kept serving a capped project"
        time.sleep(0.1)
    # The check refuses the gateway first, then writes its alerts: the alert may follow the
    # first refusal by a moment.
    while not BudgetAlert.objects.filter(threshold_percent=100).exists():
        assert time.monotonic() < deadline + 10, "the 100 % alert never fired"
        time.sleep(0.1)
    [alert_100] = BudgetAlert.objects.filter(threshold_percent=100)
    assert alert_100.spent_usd >= Decimal("0.01")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fake_chat_key")
def test_without_redis_the_gateway_refuses_a_capped_project_from_the_rows(
    served: str, project: Project, lead: User, settings: Any
) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    admission._kept.clear()
    fine_tune_priced("0.01")
    key = app_key(project, lead)
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    assert ask_production(served, key)
    dollars_spent(project, "10")
    with pytest.raises(openai.RateLimitError) as refused:
        ask_production(served, key)
    assert refused.value.body["message"] == capped_message()  # type: ignore[index]


# --- the page and the API -------------------------------------------------------------------------


def logged_in(user: User) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def page(project: Project) -> str:
    return reverse("project_budget", args=[project.pk])


def api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/budget/{tail}"


def test_a_manager_reads_the_budget_page_and_sees_no_controls(
    project: Project,
    lead: User,
    make_member: Callable[..., User],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(project=project, monthly_usd="1000", hard_cap=True, user=lead)
        dollars_spent(project, "850.125")
        dollars_spent(project, "1", priced=False)
    manager = make_member(Role.MANAGER)

    answer = logged_in(manager).get(page(project))

    assert answer.status_code == 200
    text = answer.content.decode()
    assert "$850.13 of $1,000.00 (85.0 %)" in text  # 850.125 rounded half up
    assert 'id="budget-warning"' in text
    assert 'id="budget-unpriced"' in text and "1 spend this month" in text
    assert 'id="budget-form"' not in text
    [alert] = BudgetAlert.objects.all()
    assert f'id="acknowledge-{alert.pk}"' not in text


def test_a_lead_sets_the_budget_on_the_page_and_a_mistake_names_the_field(
    project: Project, lead: User
) -> None:
    browser = logged_in(lead)
    assert 'id="budget-form"' in browser.get(page(project)).content.decode()

    saved = browser.post(page(project), {"monthly_usd": "250.50", "hard_cap": "on"})
    assert saved.status_code == 302
    budget = Budget.objects.get(project=project)
    assert (budget.monthly_usd, budget.hard_cap, budget.updated_by) == (
        Decimal("250.50"),
        True,
        lead,
    )

    wrong = browser.post(page(project), {"monthly_usd": "-3"})
    assert wrong.status_code == 400
    assert "monthly_usd: a positive amount of dollars" in wrong.content.decode()
    assert Budget.objects.get(project=project).monthly_usd == Decimal("250.50")

    removed = browser.post(reverse("project_budget_remove", args=[project.pk]))
    assert removed.status_code == 302
    assert not Budget.objects.exists()


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_reviewers_and_managers_cannot_set_a_budget(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    user = make_member(role)
    assert logged_in(user).post(page(project), {"monthly_usd": "5"}).status_code == 403
    answer = logged_in(user).put(
        api(project), {"monthly_usd": "5", "hard_cap": True}, content_type="application/json"
    )
    assert answer.status_code == 403
    assert not Budget.objects.exists()


def test_a_reviewer_reads_no_costs_and_an_outsider_not_even_the_project(
    project: Project, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    assert logged_in(reviewer).get(page(project)).status_code == 403
    assert logged_in(reviewer).get(api(project)).status_code == 403
    outsider = User.objects.create_user(username="outsider", password="pw")
    assert logged_in(outsider).get(page(project)).status_code == 404
    assert logged_in(outsider).get(api(project)).status_code == 404
    assert logged_in(outsider).post(page(project), {"monthly_usd": "5"}).status_code == 404


def test_the_api_sets_reads_and_removes_the_budget(
    project: Project, lead: User, make_member: Callable[..., User]
) -> None:
    lead_api = logged_in(lead)
    none = logged_in(make_member(Role.MANAGER)).get(api(project)).json()
    assert (none["monthly_usd"], none["hard_cap"], none["over_cap"]) == (None, None, False)

    put = lead_api.put(
        api(project), {"monthly_usd": "40.00", "hard_cap": True}, content_type="application/json"
    )
    assert put.status_code == 200
    dollars_spent(project, "41.5")
    read = logged_in(make_member(Role.MANAGER)).get(api(project)).json()
    assert read["monthly_usd"] == "40.00"
    assert Decimal(read["spent_usd"]) == Decimal("41.5")
    assert (read["percent"], read["over_cap"], read["updated_by"]) == ("103.8", True, lead.username)

    for wrong in ({"monthly_usd": "0", "hard_cap": True}, {"monthly_usd": "x", "hard_cap": True}):
        refused = lead_api.put(api(project), wrong, content_type="application/json")
        assert refused.status_code == 400
        assert "monthly_usd" in refused.json()["error"]["fields"]
    unknown = lead_api.put(
        api(project),
        {"monthly_usd": "5", "hard_cap": True, "cap": False},
        content_type="application/json",
    )
    assert unknown.status_code == 400

    assert lead_api.delete(api(project)).status_code == 204
    assert not Budget.objects.exists()


def test_a_lead_acknowledges_an_alert_once_and_a_manager_cannot(
    project: Project,
    lead: User,
    make_member: Callable[..., User],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(project=project, monthly_usd="10", hard_cap=False, user=lead)
        dollars_spent(project, "8")
    [alert] = BudgetAlert.objects.all()
    manager = make_member(Role.MANAGER)

    listed = logged_in(manager).get(api(project, "alerts/")).json()
    assert [(row["id"], row["threshold_percent"]) for row in listed["results"]] == [(alert.pk, 80)]
    acknowledge = api(project, f"alerts/{alert.pk}/acknowledge/")
    assert logged_in(manager).post(acknowledge).status_code == 403

    done = logged_in(lead).post(acknowledge)
    assert done.status_code == 200
    assert done.json()["acknowledged_by"] == lead.username
    assert logged_in(lead).post(acknowledge).status_code == 409
    assert (
        logged_in(lead)
        .post(reverse("budget_alert_acknowledge", args=[project.pk, alert.pk]))
        .status_code
        == 409
    )
    other = Project.objects.create(name="Other")
    make_member(Role.ML_LEAD, target=other)
    assert logged_in(lead).post(api(other, f"alerts/{alert.pk}/acknowledge/")).status_code == 404


def test_the_project_page_shows_a_banner_from_80_percent_on(
    project: Project, lead: User, make_member: Callable[..., User]
) -> None:
    manager = make_member(Role.MANAGER)
    budget_set(project=project, monthly_usd="100", hard_cap=True, user=lead)
    overview = reverse("project_detail", args=[project.pk])
    dollars_spent(project, "79.99")
    assert 'id="budget-banner"' not in logged_in(manager).get(overview).content.decode()

    dollars_spent(project, "0.01")
    text = logged_in(manager).get(overview).content.decode()
    assert 'id="budget-banner"' in text and "80.0 %" in text
    assert "hard cap is reached" not in text

    dollars_spent(project, "20")
    assert "hard cap is reached" in logged_in(manager).get(overview).content.decode()
    # Reviewers read no costs: no banner for them.
    reviewer_view = logged_in(make_member(Role.REVIEWER)).get(overview).content.decode()
    assert 'id="budget-banner"' not in reviewer_view


def test_the_page_escapes_the_project_name(project: Project, lead: User) -> None:
    project.name = "<script>alert(1)</script>"
    project.save()
    budget_set(project=project, monthly_usd="10", hard_cap=True, user=lead)
    text = logged_in(lead).get(page(project)).content.decode()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
