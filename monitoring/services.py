"""A lead's writes to monitoring: alert rules and the project's monitoring settings. Every
field is checked by name before anything is stored; a refused edit changes nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftportal.errors import ApplicationError
from ftportal.models import Project
from registry.models import Alias, RegisteredModel

from .models import AlertRule, Comparison, Figure, MonitoringSettings, WebhookDestination

# Bounds a rule's numbers are checked against: a window of up to 30 days (the drift window
# and monthly figures fit), a cooldown of up to a week.
MAX_WINDOW_MINUTES = 30 * 24 * 60
MAX_COOLDOWN_MINUTES = 7 * 24 * 60
MAX_MIN_VOLUME = 10_000_000
MAX_DRIFT_WINDOW_HOURS = 30 * 24
MAX_RETRAIN_MIN_NEW_EXAMPLES = 10_000_000


def _refused(field: str, message: str) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", extra={"field": field})


def whole_number(raw: object, *, field: str, low: int, high: int) -> int:
    """``raw`` (a form's text or a JSON number) as a whole number in [low, high]."""
    text = str(raw).strip() if raw is not None else ""
    if isinstance(raw, bool) or not (text.isascii() and text.isdecimal()):
        raise _refused(field, f"expected a whole number from {low} to {high}, not {text[:40]!r}.")
    value = int(text)
    if not low <= value <= high:
        raise _refused(field, f"expected a whole number from {low} to {high}, not {value}.")
    return value


def finite_number(raw: object, *, field: str) -> float:
    text = str(raw).strip() if raw is not None else ""
    try:
        value = float(text)
    except ValueError:
        raise _refused(field, f"expected a number, not {text[:40]!r}.") from None
    if isinstance(raw, bool) or not math.isfinite(value):
        raise _refused(field, f"expected a finite number, not {text[:40]!r}.")
    return value


def choice(raw: object, *, field: str, choices: type[Figure] | type[Comparison]) -> str:
    text = str(raw).strip() if raw is not None else ""
    if text not in choices.values:
        allowed = ", ".join(choices.values)
        raise _refused(field, f"expected one of {allowed}, not {text[:40]!r}.")
    return text


@dataclass(frozen=True)
class RuleFields:
    """A rule's checked fields."""

    registered_model: RegisteredModel
    alias: str
    figure: str
    comparison: str
    threshold: float
    window_minutes: int
    min_volume: int
    cooldown_minutes: int
    enabled: bool


def rule_fields_checked(project: Project, data: Mapping[str, object]) -> RuleFields:
    """The rule ``data`` describes (a form's or the API's fields), every field checked."""
    model_id = whole_number(
        data.get("registered_model"), field="registered_model", low=1, high=2**63 - 1
    )
    registered_model = RegisteredModel.objects.filter(project=project, pk=model_id).first()
    if registered_model is None:
        raise _refused("registered_model", f"this project has no registered model {model_id}.")
    alias = str(data.get("alias") or "").strip()
    if not Alias.objects.filter(registered_model=registered_model, name=alias).exists():
        raise _refused("alias", f"{registered_model.name} has no alias {alias[:60]!r}.")
    figure = choice(data.get("figure"), field="figure", choices=Figure)
    threshold = finite_number(data.get("threshold"), field="threshold")
    return RuleFields(
        registered_model=registered_model,
        alias=alias,
        figure=figure,
        comparison=choice(data.get("comparison"), field="comparison", choices=Comparison),
        threshold=threshold,
        window_minutes=whole_number(
            data.get("window_minutes"), field="window_minutes", low=1, high=MAX_WINDOW_MINUTES
        ),
        min_volume=whole_number(
            data.get("min_volume"), field="min_volume", low=0, high=MAX_MIN_VOLUME
        ),
        cooldown_minutes=whole_number(
            data.get("cooldown_minutes"),
            field="cooldown_minutes",
            low=0,
            high=MAX_COOLDOWN_MINUTES,
        ),
        enabled=_flag(data.get("enabled")),
    )


def _flag(raw: object) -> bool:
    """A checkbox ("on") or a JSON boolean."""
    return raw is True or (isinstance(raw, str) and raw.strip().lower() in ("on", "true", "1"))


def rules_of(project_id: int) -> QuerySet[AlertRule]:
    """The project's rules, with their model and who made them."""
    return AlertRule.objects.filter(project_id=project_id).select_related(
        "registered_model", "created_by"
    )


def rule_create(*, project: Project, user: User, data: Mapping[str, object]) -> AlertRule:
    fields = rule_fields_checked(project, data)
    return AlertRule.objects.create(
        project=project, created_by=user, is_default=False, **fields.__dict__
    )


def rule_in_project(project: Project, rule_id: int) -> AlertRule:
    """One rule of the project; 404 for any other id."""
    return get_object_or_404(
        AlertRule.objects.select_related("registered_model"), project=project, pk=rule_id
    )


def rule_update(*, rule: AlertRule, data: Mapping[str, object]) -> AlertRule:
    """Change a rule's fields (a default rule stays the alias's default: its model, alias and
    figure are kept)."""
    project = rule.project
    fields = rule_fields_checked(project, data)
    with transaction.atomic():
        # Locked: two leads saving one rule at once must not mix their fields.
        rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
        changes = fields.__dict__.copy()
        if rule.is_default:
            for kept in ("registered_model", "alias", "figure"):
                if changes[kept] != getattr(rule, kept):
                    raise _refused(
                        kept,
                        "a default rule keeps its model, alias and figure; add a rule instead.",
                    )
        for name, value in changes.items():
            setattr(rule, name, value)
        rule.save()
    return rule


def rule_delete(*, rule: AlertRule) -> None:
    """Remove a rule; its past alerts stay (they lose the link). A default rule is disabled
    instead, since the defaults are ensured again for every production alias."""
    if rule.is_default:
        AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
        return
    rule.delete()


# --- settings ---------------------------------------------------------------------------------


def webhook_destinations() -> list[WebhookDestination]:
    """The destinations an admin registered that a project may pick (names only are shown)."""
    return list(WebhookDestination.objects.filter(enabled=True))


def monitoring_settings_set(
    *, project: Project, user: User, data: Mapping[str, object]
) -> MonitoringSettings:
    raw_webhook = str(data.get("webhook") or "").strip()
    webhook = None
    if raw_webhook:
        webhook = WebhookDestination.objects.filter(name=raw_webhook, enabled=True).first()
        if webhook is None:
            raise _refused("webhook", f"no registered webhook is named {raw_webhook[:60]!r}.")
    values = {
        "email_enabled": _flag(data.get("email_enabled")),
        "webhook": webhook,
        "drift_window_hours": whole_number(
            data.get("drift_window_hours"),
            field="drift_window_hours",
            low=1,
            high=MAX_DRIFT_WINDOW_HOURS,
        ),
        "drift_min_requests": whole_number(
            data.get("drift_min_requests"), field="drift_min_requests", low=1, high=MAX_MIN_VOLUME
        ),
        "retrain_min_new_examples": whole_number(
            data.get("retrain_min_new_examples"),
            field="retrain_min_new_examples",
            low=1,
            high=MAX_RETRAIN_MIN_NEW_EXAMPLES,
        ),
        "updated_by": user,
    }
    settings_row, _ = MonitoringSettings.objects.update_or_create(project=project, defaults=values)
    return settings_row
