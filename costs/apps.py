"""The costs app: connects the ledger to the spends the lower layers report, checks budgets
after those spends commit, and answers the lower layers' question whether a project may spend
(``ftportal.spending.spending_refusal``: a budget's hard cap)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.apps import AppConfig

from ftportal.spending import SpentQuery, TokenPrice


def _spend_recorded(*, spend: Any, **_: Any) -> None:
    from .budget_alerts import budget_check_on_commit
    from .services import ledger_entry_record

    ledger_entry_record(spend=spend)
    # After the spender's commit, once per project and transaction (costs.budget_alerts).
    budget_check_on_commit(spend.project_id)


def _spending_refusal(project_id: int) -> str | None:
    from .budgets import spending_refusal

    return spending_refusal(project_id)


def _ledger_spent(query: SpentQuery) -> Decimal | None:
    from .services import ledger_spent

    return ledger_spent(query)


def _token_price(model_id: str, at: datetime) -> TokenPrice | None:
    from .prices import token_price_in_force

    return token_price_in_force(model_id, at)


def _budget_used_percent(project_id: int) -> float | None:
    from .budgets import budget_status_of
    from .models import Budget

    budget = Budget.objects.filter(project_id=project_id).select_related("project").first()
    percent = budget_status_of(budget).percent if budget is not None else None
    return float(percent) if percent is not None else None


class CostsConfig(AppConfig):
    name = "costs"

    def ready(self) -> None:
        from ftportal.spending import (
            ledger_spent_register,
            spend_recorded,
            spending_refusal_register,
            token_price_lookup_register,
        )
        from monitoring.project_figures import project_figure_register

        spend_recorded.connect(_spend_recorded, dispatch_uid="costs-ledger")
        token_price_lookup_register(_token_price)
        spending_refusal_register(_spending_refusal)
        ledger_spent_register(_ledger_spent)
        # Alert rules on the budget read this month's share of it (monitoring.rules).
        project_figure_register("budget_used_percent", _budget_used_percent)
