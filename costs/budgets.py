"""Budgets (issue 16 item 5): a project's monthly limit in dollars, what it has spent this month
against it, and the hard cap that refuses new spending once it is reached.

A month is a calendar month in UTC, as the ledger's days are (``services.ledger_day``). Its
spend is the sum of the project's ``LedgerDay`` rows of the month: a handful of rows, however
many ledger rows they sum. Unpriced spends are counted beside it and shown, never added as $0.

A budget with ``hard_cap`` whose month's spend has reached ``monthly_usd`` refuses new
training jobs, hosted evaluations and the gateway's chat requests, all with one message that
names the budget (:func:`refusal_message`). Training and evaluation ask through the hook in
``ftportal.spending`` (this app sits above them); the gateway reads a copy kept in Redis
(``serving.refusals``), which this module sets when a check finds the cap reached and clears
when a budget changes (:func:`gateway_refusal_sync`). The copy expires with the month.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from ftportal.errors import ApplicationError
from ftportal.models import Project
from serving.refusals import project_refusal_clear, project_refusal_set

from .models import Budget
from .selectors import CostFilter, spend_total

logger = logging.getLogger(__name__)

# The alerts' thresholds, in percent of the monthly budget (``costs.budget_alerts``).
ALERT_THRESHOLDS = (80, 100)
WARNING_PERCENT = ALERT_THRESHOLDS[0]
# What Budget.monthly_usd holds: 14 digits, 2 of them after the point.
MAX_MONTHLY_USD = Decimal("999999999999.99")
CENTS = Decimal("0.01")


# --- months ---------------------------------------------------------------------------------


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of the calendar month (UTC) ``moment`` falls in."""
    return moment.astimezone(dt.UTC).date().replace(day=1)


def month_end(month: dt.date) -> dt.datetime:
    """The first moment (UTC) after ``month``: when its budget's refusals end by themselves."""
    following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return dt.datetime.combine(following, dt.time(), tzinfo=dt.UTC)


def dollars(amount: Decimal) -> str:
    """An amount as people read it: ``$1,234.57`` (rounded to the cent, half up)."""
    return f"${amount.quantize(CENTS, rounding=ROUND_HALF_UP):,}"


# --- what a project spent this month ----------------------------------------------------------


@dataclass(frozen=True)
class MonthSpend:
    """A project's priced spend in one month and how many of its ledger rows had no price."""

    spent_usd: Decimal
    unpriced_entries: int


def month_spend(project_id: int, month: dt.date) -> MonthSpend:
    """The sum of the project's ledger days in ``month``, as the dashboard sums them (one
    small indexed aggregate)."""
    last_day = month_end(month).date() - dt.timedelta(days=1)
    spent = spend_total(CostFilter(project_ids=(project_id,), start=month, end=last_day))
    return MonthSpend(spent_usd=spent.amount, unpriced_entries=spent.unpriced_entries)


@dataclass(frozen=True)
class BudgetStatus:
    """A project's month against its budget, as pages and checks read it.

    ``share`` is the spend over the budget (1 = all of it; None without a budget);
    ``over_cap`` is True only when the budget has a hard cap and the spend reached it."""

    project: Project
    month: dt.date
    budget: Budget | None
    spent_usd: Decimal
    unpriced_entries: int
    share: Decimal | None
    over_cap: bool

    @property
    def percent(self) -> Decimal | None:
        """The share in percent, to one decimal (for pages)."""
        if self.share is None:
            return None
        return (self.share * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    @property
    def warning(self) -> bool:
        """Whether the spend reached the first alert threshold (pages show a banner)."""
        return self.share is not None and self.share * 100 >= WARNING_PERCENT

    @property
    def reached(self) -> bool:
        """Whether the spend reached the whole budget (capped or not)."""
        return self.share is not None and self.share >= 1

    @property
    def thresholds_reached(self) -> tuple[int, ...]:
        """The alert thresholds (percent) the spend has reached."""
        if self.budget is None:
            return ()
        monthly = self.budget.monthly_usd
        return tuple(t for t in ALERT_THRESHOLDS if self.spent_usd * 100 >= monthly * t)


def _status(project: Project, budget: Budget | None, month: dt.date) -> BudgetStatus:
    spend = month_spend(project.pk, month)
    share = None
    if budget is not None and budget.monthly_usd > 0:
        share = spend.spent_usd / budget.monthly_usd
    over_cap = budget is not None and budget.hard_cap and spend.spent_usd >= budget.monthly_usd
    return BudgetStatus(
        project=project,
        month=month,
        budget=budget,
        spent_usd=spend.spent_usd,
        unpriced_entries=spend.unpriced_entries,
        share=share,
        over_cap=over_cap,
    )


def budget_status(project: Project, *, now: dt.datetime | None = None) -> BudgetStatus:
    """The project's month so far against its budget (``now``: the clock's by default)."""
    budget = Budget.objects.filter(project=project).select_related("updated_by").first()
    return _status(project, budget, month_of(now or timezone.now()))


def budget_status_of(budget: Budget, *, now: dt.datetime | None = None) -> BudgetStatus:
    """:func:`budget_status` of a budget already read (with its project)."""
    return _status(budget.project, budget, month_of(now or timezone.now()))


def refusal_message(status: BudgetStatus) -> str:
    """The one sentence every refusal of a capped project answers with, naming the budget."""
    assert status.budget is not None
    unpriced = (
        f" ({status.unpriced_entries} unpriced spends are not in that figure)"
        if status.unpriced_entries
        else ""
    )
    return (
        f"Project {status.project.name} has spent {dollars(status.spent_usd)} of its "
        f"{dollars(status.budget.monthly_usd)} monthly budget (hard cap) in "
        f"{status.month:%B %Y}{unpriced}: new training jobs, hosted evaluations and gateway "
        "requests are refused until next month or until a lead raises the budget."
    )


# --- the hard cap -----------------------------------------------------------------------------


def spending_refusal(project_id: int) -> str | None:
    """``ftportal.spending``'s hook: why the project may start nothing new that spends, or
    None. One query for a project without a capped budget, two with one."""
    budget = (
        Budget.objects.filter(project_id=project_id, hard_cap=True)
        .select_related("project")
        .first()
    )
    if budget is None:
        return None
    status = budget_status_of(budget)
    if not status.over_cap:
        return None
    # The gateway's copy is set again here too: Redis may have lost it (a restart), and a
    # capped project spends nothing more whose check would set it.
    gateway_refusal_sync(status, clear=False)
    return refusal_message(status)


def _budget_version(project_id: int) -> tuple[Decimal, bool, dt.datetime] | None:
    return (
        Budget.objects.filter(project_id=project_id)
        .values_list("monthly_usd", "hard_cap", "updated_at")
        .first()
    )


def gateway_refusal_sync(status: BudgetStatus, *, clear: bool) -> None:
    """Make the gateway's copy (``serving.refusals``) say what ``status`` says: refused with
    the budget's message while over the cap; served again (only with ``clear``) otherwise.

    Only a budget's change clears: a spend's check reads a sum that a later spend may have
    passed, and clearing on it could undo the later check's refusal. A check that set the
    refusal from a budget changed meanwhile (a lead raising it) would leave the project
    refused; so the budget is read again after setting, and a changed one is applied again
    (its own after-commit clear may already have run)."""
    for _ in range(3):
        if status.over_cap:
            project_refusal_set(
                project_id=status.project.pk,
                message=refusal_message(status),
                until=month_end(status.month),
            )
        elif clear:
            project_refusal_clear(project_id=status.project.pk)
        else:
            return
        budget = status.budget
        used = None if budget is None else (budget.monthly_usd, budget.hard_cap, budget.updated_at)
        if _budget_version(status.project.pk) == used:
            return
        fresh = Budget.objects.filter(project_id=status.project.pk).first()
        status = _status(status.project, fresh, status.month)
        clear = True  # the budget changed: its new figures decide either way


# --- setting and removing -----------------------------------------------------------------------


def _monthly_usd_checked(monthly_usd: Decimal | str | int) -> Decimal:
    """``monthly_usd`` as a Decimal of dollars and cents, or ApplicationError naming the field."""
    try:
        amount = Decimal(str(monthly_usd).strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0:
        raise ApplicationError(
            "monthly_usd: a positive amount of dollars, such as 500 or 1250.50.",
            extra={"field": "monthly_usd"},
        )
    # The bound first: quantizing 1E+999999 to the cent overflows Decimal's precision.
    if amount > MAX_MONTHLY_USD:
        raise ApplicationError(
            f"monthly_usd: at most {dollars(MAX_MONTHLY_USD)}.", extra={"field": "monthly_usd"}
        )
    if amount != amount.quantize(CENTS):
        raise ApplicationError(
            "monthly_usd: dollars and cents, at most two decimal places.",
            extra={"field": "monthly_usd"},
        )
    return amount.quantize(CENTS)


def budget_set(
    *, project: Project, monthly_usd: Decimal | str | int, hard_cap: bool, user: User
) -> Budget:
    """Give the project a monthly budget, or change the one it has. Once committed, the
    gateway's refusal follows the new figures and the alerts they reach fire
    (``costs.budget_alerts``)."""
    amount = _monthly_usd_checked(monthly_usd)
    with transaction.atomic():
        budget, _ = Budget.objects.update_or_create(
            project=project,
            defaults={"monthly_usd": amount, "hard_cap": hard_cap, "updated_by": user},
        )
    # Deferred: budget_alerts imports this module for the status it checks.
    from .budget_alerts import budget_changed

    transaction.on_commit(lambda: budget_changed(project.pk), robust=True)
    return budget


def budget_remove(*, project: Project, user: User) -> None:
    """Take the project's budget away: no alerts, no cap. Its past alerts stay on record."""
    removed, _ = Budget.objects.filter(project=project).delete()
    if removed:
        # The row that named who set it is gone: the log says who removed it.
        logger.info("%s removed the budget of project %s", user.get_username(), project.pk)
    transaction.on_commit(lambda: project_refusal_clear(project_id=project.pk), robust=True)
