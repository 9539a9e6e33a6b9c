"""The ledger reconciled with the providers' own cost reports (issue 16, item 3).

Each enabled OpenAI endpoint whose admin named a cost report variable
(``Endpoint.cost_report_secret_env``) is compared day by day, UTC, for the last few days before
today (today's figures at the provider are still partial): what OpenAI's organisation cost
report says it billed (``providers.openai_costs``), against the priced ledger rows billed by
that endpoint (``LedgerEntry.endpoint``). Each day is one ``ReconciliationDay``, replaced
when the day is checked again, and flagged when the two differ by more than
``FTPORTAL_RECONCILE_ABS_USD`` and by more than ``FTPORTAL_RECONCILE_REL`` of the provider's
figure. Unpriced ledger rows of the day are counted and noted: they are one explanation of a
difference (their cost is in the provider's figure, not in the ledger's sum).

The organisation's report covers everything billed to it, including spend this site never
made (other applications on the same account): a standing difference says so.

A report that cannot be read (a refused admin key, a provider error, a timeout) is logged,
naming the endpoint and the variable, never the key, and leaves the stored days as they were.
The next daily run checks the same days again, so nothing retries sooner.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from catalog.models import Endpoint, EndpointKind
from catalog.secrets import endpoint_cost_report_credentials
from ftportal.models import Membership
from ftportal.roles import Role
from ftportal.spending import AMOUNT_PLACES
from providers.base import ProviderError
from providers.openai_costs import daily_costs

from .models import LedgerEntry, ReconciliationDay

logger = logging.getLogger(__name__)

# Days before today compared on each run.
DEFAULT_DAYS = 7
WHO = "Reconciliation"
CENTS = Decimal("0.01")
# Statuses that say the admin key itself was refused: the provider's text is left out of the
# log then, since some providers quote part of the key they refused.
KEY_REFUSED = frozenset({401, 403})
# Who reads reconciliation besides staff: endpoints are site-wide, so a project role that
# reads bills in some project is enough; ML leads launch spend rather than audit it.
READER_ROLES = (Role.MANAGER, Role.ADMIN)

AnyUser = AbstractBaseUser | AnonymousUser


@dataclass(frozen=True)
class EndpointReconciled:
    """What one endpoint's reconciliation did: how many days it stored and flagged, or why it
    stored nothing (``error``, as logged)."""

    endpoint: str
    days: int = 0
    flagged: int = 0
    error: str = ""


@dataclass(frozen=True)
class LedgerSum:
    """The ledger's priced amount for a day, and how many of its rows had no price."""

    amount: Decimal = Decimal(0)
    unpriced_entries: int = 0


# --- writes -------------------------------------------------------------------------------


def reconciling_endpoints() -> QuerySet[Endpoint]:
    """The endpoints whose cost report is compared with the ledger."""
    return (
        Endpoint.objects.filter(enabled=True, kind=EndpointKind.OPENAI)
        .exclude(cost_report_secret_env="")
        .order_by("name")
    )


def provider_costs_reconcile(
    *, days: int = DEFAULT_DAYS, today: dt.date | None = None
) -> list[EndpointReconciled]:
    """Reconcile every endpoint of :func:`reconciling_endpoints` for the ``days`` days before
    ``today`` (UTC; now when None). One endpoint's failure leaves the others' work done."""
    if days < 1:
        raise ValueError("Reconcile at least one day.")
    until = today or timezone.now().astimezone(dt.UTC).date()
    return [
        endpoint_costs_reconcile(endpoint=endpoint, days=days, today=until)
        for endpoint in reconciling_endpoints()
    ]


def endpoint_costs_reconcile(
    *, endpoint: Endpoint, days: int, today: dt.date
) -> EndpointReconciled:
    """Compare ``endpoint``'s cost report with the ledger for the ``days`` days before
    ``today`` and store each day's comparison; nothing is stored when the report cannot be
    read."""
    first_day = today - dt.timedelta(days=days)
    try:
        credentials = endpoint_cost_report_credentials(endpoint, who=WHO)
    except ProviderError as error:
        # This worker cannot read the report (its variable is unset here, say).
        logger.warning("%s", error)
        return EndpointReconciled(endpoint=endpoint.name, error=str(error))
    try:
        billed = daily_costs(
            admin_key=credentials.api_key,
            base_url=credentials.base_url,
            first_day=first_day,
            end_day=today,
            timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
        )
    except ProviderError as error:
        message = _report_failure(endpoint, error, credentials.api_key)
        logger.error("%s", message)
        return EndpointReconciled(endpoint=endpoint.name, error=message)

    ledger = ledger_days(endpoint=endpoint, first_day=first_day, end_day=today)
    checked_at = timezone.now()
    with transaction.atomic():
        stored = [
            _day_store(endpoint, day, provider, ledger.get(day, LedgerSum()), checked_at)
            for day, provider in sorted(billed.items())
            if first_day <= day < today
        ]
    flagged = [row for row in stored if row.flagged]
    for row in flagged:
        logger.warning("%s: endpoint %s, %s: %s", WHO, endpoint.name, row.day, row.note)
    return EndpointReconciled(endpoint=endpoint.name, days=len(stored), flagged=len(flagged))


def _report_failure(endpoint: Endpoint, error: ProviderError, key: str) -> str:
    variable = endpoint.cost_report_secret_env
    if error.status_code in KEY_REFUSED:
        said = (
            f"the provider refused the admin key in {variable} (HTTP {error.status_code}): "
            "it must be an organisation admin key."
        )
    else:
        said = f"{str(error).replace(key, '[key]').rstrip('.')} (admin key in {variable})."
    return f"{WHO}: endpoint {endpoint.name}: {said} No reconciliation day was changed."


def _day_store(
    endpoint: Endpoint,
    day: dt.date,
    provider: Decimal,
    ledger: LedgerSum,
    checked_at: dt.datetime,
) -> ReconciliationDay:
    provider_usd = provider.quantize(AMOUNT_PLACES)
    flagged, note = day_verdict(provider_usd=provider_usd, ledger=ledger)
    row, _ = ReconciliationDay.objects.update_or_create(
        endpoint=endpoint,
        day=day,
        defaults={
            "provider_usd": provider_usd,
            "ledger_usd": ledger.amount,
            "ledger_unpriced_entries": ledger.unpriced_entries,
            "flagged": flagged,
            "note": note,
            "checked_at": checked_at,
        },
    )
    return row


def day_verdict(*, provider_usd: Decimal, ledger: LedgerSum) -> tuple[bool, str]:
    """Whether a day is flagged, and what its note says: flagged when the provider's figure
    and the ledger's differ by more than the larger of the absolute threshold and the
    relative one (a share of the provider's figure)."""
    difference = provider_usd - ledger.amount
    threshold = max(
        Decimal(str(settings.FTPORTAL_RECONCILE_ABS_USD)),
        Decimal(str(settings.FTPORTAL_RECONCILE_REL)) * provider_usd,
    )
    flagged = abs(difference) > threshold
    notes = []
    if flagged:
        side = "more" if difference > 0 else "less"
        notes.append(
            f"The provider billed {_usd(provider_usd)}, the ledger holds {_usd(ledger.amount)}: "
            f"{_usd(abs(difference))} {side} than the ledger, above the threshold of "
            f"{_usd(threshold)}."
        )
    if ledger.unpriced_entries:
        entries = "entry" if ledger.unpriced_entries == 1 else "entries"
        notes.append(
            f"{ledger.unpriced_entries} unpriced ledger {entries} that day: billed by the "
            "provider, not in the ledger's sum."
        )
    return flagged, " ".join(notes)


def _usd(amount: Decimal) -> str:
    cents = amount.quantize(CENTS)
    return f"${cents}" if cents == amount else f"${amount.normalize():f}"


# --- reads --------------------------------------------------------------------------------


def ledger_days(
    *, endpoint: Endpoint, first_day: dt.date, end_day: dt.date
) -> dict[dt.date, LedgerSum]:
    """The ledger's rows billed by ``endpoint``, summed per UTC day from ``first_day`` up to,
    not including, ``end_day``."""
    first = dt.datetime.combine(first_day, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(end_day, dt.time(), tzinfo=dt.UTC)
    rows = (
        LedgerEntry.objects.filter(endpoint=endpoint, occurred_at__gte=first, occurred_at__lt=end)
        .annotate(day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .values("day")
        # Named apart from the field, which the filter reads.
        .annotate(total=Sum("amount"), unpriced=Count("pk", filter=Q(amount__isnull=True)))
        .order_by("day")
    )
    return {
        row["day"]: LedgerSum(
            amount=(row["total"] or Decimal(0)).quantize(AMOUNT_PLACES),
            unpriced_entries=row["unpriced"],
        )
        for row in rows
    }


def reconciliation_flags(since: dt.date) -> int:
    """How many endpoint-days from ``since`` on are flagged (for the dashboard's count)."""
    return ReconciliationDay.objects.filter(day__gte=since, flagged=True).count()


def reconciliation_days(*, since: dt.date) -> QuerySet[ReconciliationDay]:
    """The stored days from ``since`` on, flagged ones first, then the newest."""
    return (
        ReconciliationDay.objects.filter(day__gte=since)
        .select_related("endpoint")
        .order_by("-flagged", "-day", "endpoint__name")
    )


def reconciliation_readable(user: AnyUser) -> bool:
    """Whether ``user`` may read the reconciliation: staff, and members who are a manager or
    an admin of some project (endpoints, and so their bills, are site-wide)."""
    if not user.is_authenticated:
        return False
    if getattr(user, "is_staff", False):
        return True
    roles = [role.value for role in READER_ROLES]
    return Membership.objects.filter(user_id=user.pk, role__in=roles).exists()
