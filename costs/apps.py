"""The costs app: connects the ledger to the spends the lower layers report."""

from datetime import datetime
from typing import Any

from django.apps import AppConfig

from ftportal.spending import TokenPrice


def _spend_recorded(*, spend: Any, **_: Any) -> None:
    from .services import ledger_entry_record

    ledger_entry_record(spend=spend)


def _token_price(model_id: str, at: datetime) -> TokenPrice | None:
    from .prices import token_price_in_force

    return token_price_in_force(model_id, at)


class CostsConfig(AppConfig):
    name = "costs"

    def ready(self) -> None:
        from ftportal.spending import spend_recorded, token_price_lookup_register

        spend_recorded.connect(_spend_recorded, dispatch_uid="costs-ledger")
        token_price_lookup_register(_token_price)
