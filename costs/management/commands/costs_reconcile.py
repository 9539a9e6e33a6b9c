"""``python manage.py costs_reconcile [--days N]``: compare the ledger with the providers' own
cost reports now, as the daily task does (``costs.reconciliation``)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from costs.reconciliation import DEFAULT_DAYS, provider_costs_reconcile


class Command(BaseCommand):
    help = (
        "Compare the ledger, day by day, with the cost report of every enabled OpenAI "
        "endpoint that names a cost report variable, for the last --days days before today "
        "(UTC); store each day and flag differences above the thresholds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            help=f"days before today (default {DEFAULT_DAYS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = options["days"]
        if days < 1:
            raise CommandError("--days: give at least 1.")
        done = provider_costs_reconcile(days=days)
        if not done:
            self.stdout.write("No endpoint names a cost report variable: nothing to reconcile.")
        for endpoint in done:
            if endpoint.error:
                self.stderr.write(endpoint.error)
            else:
                self.stdout.write(
                    f"{endpoint.endpoint}: {endpoint.days} days compared, {endpoint.flagged} "
                    "flagged."
                )
        failed = [endpoint.endpoint for endpoint in done if endpoint.error]
        if failed:
            raise CommandError(f"Not reconciled: {', '.join(failed)}.")
