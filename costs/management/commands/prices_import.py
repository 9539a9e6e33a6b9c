"""``python manage.py prices_import [--file PATH]``: import token prices from litellm's table."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from costs.prices import PriceTableError, prices_import


class Command(BaseCommand):
    help = (
        "Import chat models' token prices from litellm's price table (the installed one, or "
        "--file in its format) as dated rows; unchanged prices add nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", type=Path, help="a table in litellm's format")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            imported = prices_import(path=options["file"])
        except PriceTableError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{imported.added} prices added, {imported.unchanged} unchanged ({imported.source})."
        )
