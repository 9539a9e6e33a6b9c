"""The cost ledger: one append-only row for every spend (``ftportal.spending.Spend``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn

from django.db import models

from ftportal.models import Project
from ftportal.spending import SpendKind, SpendUnit


class LedgerChangeRefused(Exception):
    """A ledger row is never changed or deleted once written: an audit reads it as it was."""


class LedgerEntryQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise LedgerChangeRefused("Ledger rows are append-only: nothing updates them.")

    def delete(self) -> NoReturn:
        raise LedgerChangeRefused("Ledger rows are append-only: nothing deletes them.")


class LedgerEntry(models.Model):
    """One spend: what was used (``quantity`` of ``unit``), at what price and by whose word
    (``price`` dollars per ``price_per`` units, ``price_source``), and what it cost
    (``amount``; None when no price was known: unpriced, never $0).

    Append-only: saving a stored row again, updating or deleting rows raises
    LedgerChangeRefused (a project's deletion still takes its rows with it). ``event`` is the
    spend's unique name from the step that made it, so a retried task adds no second row.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ledger_entries")
    # What the spend served, where known; the rows outlive versions and jobs (SET_NULL).
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    training_job = models.ForeignKey(
        "training.TrainingJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # The registered endpoint whose provider bills this spend (hosted tokens), for reconciling
    # with that provider's own cost report; None for our own hardware.
    endpoint = models.ForeignKey(
        "catalog.Endpoint",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # The evaluation run that spent it (answers, judging), for its page's total.
    eval_run = models.ForeignKey(
        "evaluation.EvalRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    kind = models.CharField(max_length=20, choices=SpendKind.choices)
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    unit = models.CharField(max_length=20, choices=SpendUnit.choices)
    price = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    price_per = models.DecimalField(max_digits=12, decimal_places=0)
    price_source = models.CharField(max_length=300)
    amount = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    event = models.CharField(max_length=200, unique=True)
    origin = models.CharField(max_length=300)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["project", "occurred_at"], name="ledger_project_time"),
            models.Index(fields=["occurred_at"], name="ledger_time"),
            # A version's investment (training, evaluation, judging) among its many serving
            # rows: by the version alone, Postgres read half a million serving rows of a 5M
            # ledger to keep 4,500 (1.2 s); with the kind, 17 ms (bench/costs.py).
            models.Index(fields=["model_version", "kind"], name="ledger_version_kind"),
        ]

    def __str__(self) -> str:
        cost = "unpriced" if self.amount is None else f"${self.amount}"
        return f"{self.kind} {self.quantity} {self.unit}: {cost} ({self.origin})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerChangeRefused(f"Ledger row {self.pk} is append-only: not changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LedgerChangeRefused(f"Ledger row {self.pk} is append-only: not deleted.")

    @property
    def priced(self) -> bool:
        return self.amount is not None


class PriceOrigin(models.TextChoices):
    # Imported from litellm's machine-readable price table (costs.prices).
    TABLE = "table", "price table"
    # Set by a lead or an admin; an import never overrides it.
    MANUAL = "manual", "manual override"


class Price(models.Model):
    """A model's token prices from a date on, per million tokens: dated rows, never edited, so
    that the price in force at any moment can be read back (``costs.prices.price_in_force``).

    ``model`` is the id the provider bills under (``gpt-4o-mini-2024-07-18``,
    ``ft:gpt-4o-mini-2024-07-18`` for that model's fine-tunes, ``claude-haiku-4-5``). A price
    unknown on one side stays None (unpriced there, never $0). Manual rows win over the
    table's from their date on.
    """

    model = models.CharField(max_length=300)
    provider = models.CharField(max_length=100, blank=True)
    input_usd_per_million_tokens = models.DecimalField(
        max_digits=18, decimal_places=8, null=True, blank=True
    )
    output_usd_per_million_tokens = models.DecimalField(
        max_digits=18, decimal_places=8, null=True, blank=True
    )
    origin = models.CharField(max_length=10, choices=PriceOrigin.choices)
    # Where the figures came from, in words: the table and its version, or who set them why.
    source = models.CharField(max_length=300)
    effective_from = models.DateTimeField()
    created_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from", "-id"]
        indexes = [
            models.Index(fields=["model", "origin", "effective_from"], name="price_model_in_force"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.model}: in {self.input_usd_per_million_tokens}, out "
            f"{self.output_usd_per_million_tokens} per M ({self.source})"
        )


class LedgerDay(models.Model):
    """The ledger summed per project, day, kind and model version: what the dashboards read
    instead of the millions of ledger rows (``costs.selectors``). Written only by
    ``costs.services.ledger_entry_record``, in the transaction that writes the ledger row, so
    it always equals the ledger's sums (the ledger stays the one record of every spend).

    ``model_version_key`` is the version's id, 0 for a spend of no version: a unique key
    needs a value where a foreign key would be NULL."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    kind = models.CharField(max_length=20, choices=SpendKind.choices)
    model_version_key = models.BigIntegerField()
    # Sum of the priced rows' amounts; the unpriced rows are counted, never summed as $0.
    amount = models.DecimalField(max_digits=24, decimal_places=8)
    entries = models.BigIntegerField()
    unpriced_entries = models.BigIntegerField()
    tokens = models.DecimalField(max_digits=28, decimal_places=6)
    compute_seconds = models.DecimalField(max_digits=28, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "kind", "model_version_key"], name="ledger_day_key"
            )
        ]
        indexes = [
            models.Index(fields=["day"], name="ledger_day_day"),
            # The top cost drivers group by project, kind and version: read in this order,
            # from the index alone, the grouping needs no sort (a year of 20 projects' days
            # spilled its sort to disk at Postgres's default work_mem: 400 ms, now 83).
            models.Index(
                fields=["project", "kind", "model_version_key", "day"],
                include=["amount", "entries", "unpriced_entries", "tokens", "compute_seconds"],
                name="ledger_day_drivers",
            ),
        ]


class Budget(models.Model):
    """A project's monthly spending limit in dollars (calendar months, UTC). Alerts fire at
    ``ALERT_THRESHOLDS`` of it; with ``hard_cap`` the project's new training jobs and hosted
    evaluations are refused and its gateway keys answered 429 once the month's spend reaches
    it (``costs.budgets``)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="budget")
    monthly_usd = models.DecimalField(max_digits=14, decimal_places=2)
    hard_cap = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        cap = ", hard cap" if self.hard_cap else ""
        return f"{self.project}: ${self.monthly_usd} a month{cap}"


class BudgetAlert(models.Model):
    """One alert of one budget threshold in one month: unique, so that it fires once.
    ``spent_usd`` and ``budget_usd`` are the figures when it fired; ``notified`` lists the
    addresses it was e-mailed to."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="budget_alerts")
    month = models.DateField(help_text="The first day of the month it is about.")
    threshold_percent = models.PositiveSmallIntegerField()
    spent_usd = models.DecimalField(max_digits=24, decimal_places=8)
    budget_usd = models.DecimalField(max_digits=14, decimal_places=2)
    fired_at = models.DateTimeField(auto_now_add=True)
    notified = models.TextField(blank=True)
    acknowledged_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "month", "threshold_percent"], name="budget_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.threshold_percent} % of ${self.budget_usd} in {self.month}"


class ReconciliationDay(models.Model):
    """One day of one endpoint's bill compared with the ledger (``costs.reconciliation``):
    what the provider's own cost report says, what the ledger holds for spends billed by that
    endpoint, and whether the difference is above the threshold. Checked again, the row is
    replaced by the newer comparison (it is a report, not a record of spending)."""

    endpoint = models.ForeignKey("catalog.Endpoint", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    provider_usd = models.DecimalField(max_digits=24, decimal_places=8)
    ledger_usd = models.DecimalField(max_digits=24, decimal_places=8)
    ledger_unpriced_entries = models.BigIntegerField(default=0)
    flagged = models.BooleanField(default=False)
    note = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "endpoint_id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "day"], name="reconciliation_once_a_day")
        ]

    def __str__(self) -> str:
        return (
            f"{self.endpoint} {self.day}: provider ${self.provider_usd}, ledger ${self.ledger_usd}"
        )

    @property
    def difference_usd(self) -> Decimal:
        return self.provider_usd - self.ledger_usd


class UnpricedAlert(models.Model):
    """A spend recorded without a price, alerted once a month per project and missing price
    (``costs.unpriced_alerts``): shown on the dashboard and e-mailed to those who read the
    project's costs, so that a gap in the price table is fixed rather than read as free.
    ``subject`` is what lacked a price, as the spend's price source says it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="The first day of the month it is about.")
    subject = models.CharField(max_length=300)
    kind = models.CharField(max_length=20, choices=SpendKind.choices)
    first_event = models.CharField(max_length=200)
    fired_at = models.DateTimeField(auto_now_add=True)
    notified = models.TextField(blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "month", "subject"], name="unpriced_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project}: unpriced {self.kind} in {self.month:%Y-%m} ({self.subject})"
