"""The costs app: connects the ledger to the spends the lower layers report."""

from typing import Any

from django.apps import AppConfig


def _spend_recorded(*, spend: Any, **_: Any) -> None:
    from .services import ledger_entry_record

    ledger_entry_record(spend=spend)


class CostsConfig(AppConfig):
    name = "costs"

    def ready(self) -> None:
        from ftportal.spending import spend_recorded

        spend_recorded.connect(_spend_recorded, dispatch_uid="costs-ledger")
