"""What every step that spends money or machine time reports: one :class:`Spend`, handed to
:func:`spend_record` in the transaction that did the spending.

The ledger that stores them (``costs``) sits above every app that spends, so those apps cannot
import it; this module, in the lowest app layer, is the hook between them. ``costs`` connects
its receiver to :data:`spend_recorded` when it loads, and writes each spend as one append-only
ledger row in the caller's transaction: a job that fails to save its outcome leaves no row.

A spend is priced as ``quantity x price / price_per``: a compute time of 90 s at $0.10 an hour
is ``90 x 0.10 / 3600``, and 1,234 tokens at $3 per million ``1234 x 3 / 1000000``, so that the
amount is exact in Decimal (a price per single second or token would not be). A spend whose
price is unknown keeps ``price`` None and is recorded as unpriced, never as $0.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.dispatch import Signal
from django.utils import timezone

from .errors import ConflictError

# Amounts are kept to this many decimal places of a dollar (a token of a cheap model costs
# well under a millionth of one).
AMOUNT_PLACES = Decimal("0.00000001")
TOKENS_PER_PRICE = Decimal(1_000_000)
SECONDS_PER_PRICE = Decimal(3600)
SECONDS_PLACES = Decimal("0.000001")


class SpendKind(models.TextChoices):
    TRAINING = "training", "Training"
    EVALUATION = "evaluation", "Evaluation"
    JUDGING = "judging", "Judging"
    SERVING = "serving", "Serving"
    DATA_PREPARATION = "data_preparation", "Data preparation"


class SpendUnit(models.TextChoices):
    TOKENS = "tokens", "tokens"
    COMPUTE_SECONDS = "compute_seconds", "compute seconds"


@dataclass(frozen=True)
class Spend:
    """One spend, as the step that made it knows it.

    ``event`` names the spend uniquely and stably (``training_job:12:attempt:2``): a retried
    task that reports the same spend again adds no second row. ``origin`` says in words what
    spent it, for the ledger's readers."""

    project_id: int
    kind: SpendKind
    quantity: Decimal
    unit: SpendUnit
    # Dollars per ``price_per`` units; None: no price is known (unpriced, never $0).
    price: Decimal | None
    price_per: Decimal
    price_source: str
    event: str
    origin: str
    model_version_id: int | None = None
    training_job_id: int | None = None
    # The registered endpoint whose provider bills it (hosted tokens); None on our hardware.
    endpoint_id: int | None = None
    # The evaluation run that spent it (its answers, its judge), where one did.
    eval_run_id: int | None = None
    occurred_at: datetime = field(default_factory=timezone.now)

    @property
    def amount(self) -> Decimal | None:
        """What it cost in dollars, exact to AMOUNT_PLACES; None when unpriced."""
        if self.price is None:
            return None
        return (self.quantity * self.price / self.price_per).quantize(AMOUNT_PLACES)


def worker_time_spend(
    *,
    project_id: int,
    kind: SpendKind,
    seconds: float,
    event: str,
    origin: str,
    model_version_id: int | None = None,
    training_job_id: int | None = None,
) -> Spend:
    """``seconds`` of this worker's time at its FTPORTAL_LOCAL_USD_PER_HOUR (each host sets its
    own rate; the price source names the host)."""
    return Spend(
        project_id=project_id,
        kind=kind,
        quantity=Decimal(str(seconds)).quantize(SECONDS_PLACES),
        unit=SpendUnit.COMPUTE_SECONDS,
        price=Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR)),
        price_per=SECONDS_PER_PRICE,
        price_source=f"FTPORTAL_LOCAL_USD_PER_HOUR on worker {socket.gethostname()}",
        event=event,
        origin=origin,
        model_version_id=model_version_id,
        training_job_id=training_job_id,
    )


def token_spends(
    *,
    project_id: int,
    kind: SpendKind,
    event: str,
    origin: str,
    tokens: tuple[int, int],
    prices: tuple[Decimal | None, Decimal | None],
    price_source: str,
    model_version_id: int | None = None,
    endpoint_id: int | None = None,
    occurred_at: datetime | None = None,
) -> list[Spend]:
    """The spends of ``tokens`` (input, output) at ``prices`` (dollars per million, input and
    output; None: unpriced on that side): one spend a side that used any, its event
    ``event`` with ``:input`` or ``:output`` added. ``endpoint_id``: the registered endpoint
    whose provider bills them."""
    spends = []
    for side, count, price in zip(("input", "output"), tokens, prices, strict=True):
        if count == 0:
            continue
        source = price_source if price is not None else f"{price_source}: none for {side}"
        spends.append(
            Spend(
                project_id=project_id,
                kind=kind,
                quantity=Decimal(count),
                unit=SpendUnit.TOKENS,
                price=price,
                price_per=TOKENS_PER_PRICE,
                price_source=source,
                event=f"{event}:{side}",
                origin=f"{origin}, {side} tokens",
                model_version_id=model_version_id,
                endpoint_id=endpoint_id,
                occurred_at=occurred_at or timezone.now(),
            )
        )
    return spends


@dataclass(frozen=True)
class TokenPrice:
    """A model's token prices in force at a moment (dollars per million; None: unknown on that
    side) and where they come from."""

    input_usd_per_million_tokens: Decimal | None
    output_usd_per_million_tokens: Decimal | None
    source: str


TokenPriceLookup = Callable[[str, datetime], TokenPrice | None]
_token_price_lookup: TokenPriceLookup | None = None


def token_price_lookup_register(lookup: TokenPriceLookup) -> None:
    """Called by the ledger's app (``costs``), which keeps the dated prices, when it loads."""
    global _token_price_lookup
    _token_price_lookup = lookup


def token_price(model_id: str, at: datetime) -> TokenPrice | None:
    """The token prices of the provider's ``model_id`` in force at ``at``; None when none is
    known (the spend is then unpriced)."""
    if _token_price_lookup is None:
        raise ImproperlyConfigured("No price table answers: is 'costs' installed?")
    return _token_price_lookup(model_id, at)


@dataclass(frozen=True)
class SpentQuery:
    """Which of the ledger's rows to total: a training job's or an evaluation run's, of
    ``kind`` if given."""

    training_job_id: int | None = None
    eval_run_id: int | None = None
    kind: SpendKind | None = None


SpentLookup = Callable[[SpentQuery], Decimal | None]
_ledger_spent: SpentLookup | None = None


def ledger_spent_register(lookup: SpentLookup) -> None:
    """Called by the ledger's app (``costs``) when it loads."""
    global _ledger_spent
    _ledger_spent = lookup


def ledger_spent(query: SpentQuery) -> Decimal | None:
    """What the ledger holds for the spends ``query`` names, read in the caller's transaction;
    None when it holds none, or one without a price (the total is then unknown, never a sum
    that counts it as $0). Pages that show what a job or an evaluation cost read it here: the
    ledger is the one place spend is computed."""
    if _ledger_spent is None:
        raise ImproperlyConfigured("No cost ledger answers: is 'costs' installed?")
    return _ledger_spent(query)


# Sent with ``spend=`` a Spend; the ledger's receiver writes it (``costs.apps``).
spend_recorded = Signal()


def spend_record(spend: Spend) -> None:
    """Report ``spend`` to the ledger, within the caller's transaction. A site without the
    ledger's app loaded is misconfigured: a spend must never go unrecorded."""
    if not spend_recorded.has_listeners():
        raise ImproperlyConfigured("No cost ledger receives spends: is 'costs' installed?")
    spend_recorded.send(sender=Spend, spend=spend)


# --- refusing new spending ----------------------------------------------------------------------
# A project whose budget has a hard cap and has reached it starts nothing new that spends:
# the ledger's app (``costs``, above every spender) answers why through this hook, registered
# when it loads; training, evaluation and the gateway ask it before they spend.

SpendingRefusal = Callable[[int], str | None]
_spending_refusal: SpendingRefusal | None = None


def spending_refusal_register(refusal: SpendingRefusal) -> None:
    """Called by the ledger's app (``costs``), which keeps the budgets, when it loads."""
    global _spending_refusal
    _spending_refusal = refusal


def spending_refusal(project_id: int) -> str | None:
    """Why the project may start nothing new that spends (its budget's hard cap, in words
    that name the budget); None when it may. Without the ledger's app there are no budgets,
    so nothing is refused."""
    if _spending_refusal is None:
        return None
    return _spending_refusal(project_id)


class SpendingRefused(ConflictError):
    """New spending refused by the project's budget (409: the project's state, not the
    request, is what stands in the way; it ends with the month or a raised budget)."""


def new_spending_check(project_id: int) -> None:
    """SpendingRefused with the budget's message when the project may not start new spending
    (a training job, a hosted evaluation)."""
    refusal = spending_refusal(project_id)
    if refusal is not None:
        raise SpendingRefused(refusal, extra={"reason": "budget_hard_cap"})
