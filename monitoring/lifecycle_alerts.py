"""Retirement countdowns (issue 17, item 4): an alert for each production version whose base
model goes away, or can no longer be fine-tuned, within 180 days.

Every version behind a registered model's ``production`` alias is read against its base
model's lifecycle events (``catalog.lifecycle.base_model_lifecycle_events``): the shutdown
(``retires_at``) and the end of inference on fine-tuned models (``fine_tuned_inference_ends_at``),
after which it stops serving; the end of new fine-tuning jobs on the base (``deprecated_at``) and
at its endpoint (``Endpoint.fine_tuning_ends_at``, OpenAI's self-serve fine-tuning ends on
2027-01-06), after which it cannot be retrained there.

Of the ends with one consequence only the first counts (on one day, the shutdown rather than
the end of fine-tuned inference, the endpoint's end of fine-tuning rather than the base's
deprecation): once it has come, a later one changes nothing for the version. Such an event
within 180 days raises one alert per version, event and step, the step being the smallest of
180, 90 and 30 days reached, or 0 once the day has come; its key is
``lifecycle:<version id>:<event>:<step>``. Info at 180, warning at 90, critical at 30 and from
the day on. A step's alert is notified once (``STEP_COOLDOWN``); raised again on the next days
it is updated, not added. Reaching the next step resolves the previous step's alert; an event
whose date moved beyond 180 days (or was removed, or no longer comes first), or a version no
longer in production, has its alerts resolved. A step's alert that a person resolved is not
raised again: the next step raises its own. The message names the local path: retraining on a
local base model with the local LoRA trainer, which the project's retraining proposal page can
prefill.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from catalog.lifecycle import LifecycleEvent, LifecycleEventKind, base_model_lifecycle_events
from catalog.models import Provider
from catalog.selectors import active_base_models
from registry.models import Alias, ModelVersion

from .alerts import AlertRaise, alert_clear, alert_raise
from .models import Alert, AlertKind, AlertState, Severity
from .selectors import production_aliases

HORIZON_DAYS = 180
# The countdown's steps, in days left; 0 is the day itself and after.
STEPS = (180, 90, 30, 0)
STEP_SEVERITY = {
    180: Severity.INFO,
    90: Severity.WARNING,
    30: Severity.CRITICAL,
    0: Severity.CRITICAL,
}
KEY_PREFIX = "lifecycle:"
# Longer than any step lasts before the next: each step's alert is notified once (a date
# passed with the version still in production, once a year).
STEP_COOLDOWN = dt.timedelta(days=366)
# Of two ends with one consequence on the same day, the broader one speaks: the base's
# shutdown covers the end of its fine-tuned models' inference, the endpoint's end of
# fine-tuning covers the base's deprecation.
BROADER_FIRST = {
    LifecycleEventKind.RETIRES: 0,
    LifecycleEventKind.INFERENCE_ENDS: 1,
    LifecycleEventKind.FINE_TUNING_ENDS: 0,
    LifecycleEventKind.DEPRECATED: 1,
}


@dataclass(frozen=True)
class LifecycleAlerted:
    """One alert the check raised (``created`` when new) or resolved (``cleared``)."""

    project_id: int
    key: str
    alert_id: int
    severity: str
    created: bool = False
    cleared: bool = False


# --- reads ----------------------------------------------------------------------------------


def lifecycle_events_of(version: ModelVersion, today: dt.date) -> list[LifecycleEvent]:
    """The dated ends that concern ``version`` (its base model's and its endpoint's), soonest
    first, each with its kind, date, days left (0 on the day, negative after) and words; past
    ones included. A page shows them; a retraining proposal reads ``stops_serving``."""
    return base_model_lifecycle_events(version.base_model, today=today)


def binding_events(events: list[LifecycleEvent]) -> list[LifecycleEvent]:
    """Of ``events``, the one that comes first for each consequence (stops serving, cannot be
    retrained there): a later end of the same consequence changes nothing once the first has
    come, so only the first is counted down."""
    first: dict[bool, LifecycleEvent] = {}
    for event in sorted(events, key=lambda e: (e.date, BROADER_FIRST[e.kind])):
        first.setdefault(event.stops_serving, event)
    return sorted(first.values(), key=lambda e: (e.date, BROADER_FIRST[e.kind]))


def countdown_step(days_left: int) -> int | None:
    """The countdown's step for an event ``days_left`` days away, or None beyond 180 days."""
    if days_left > HORIZON_DAYS:
        return None
    return min(step for step in STEPS if days_left <= step)


def lifecycle_key(version_id: int, kind: LifecycleEventKind, step: int) -> str:
    return f"{KEY_PREFIX}{version_id}:{kind}:{step}"


def local_base_model_names() -> list[str]:
    """The catalog's active local base models, which the local LoRA trainer retrains on."""
    return [model.display_name for model in active_base_models().filter(provider=Provider.LOCAL)]


# --- the check ------------------------------------------------------------------------------


def lifecycle_alerts_check(
    *, today: dt.date | None = None, now: dt.datetime | None = None
) -> list[LifecycleAlerted]:
    """Raise the countdown alert of every production version's events within 180 days and
    resolve those no longer due; ``today`` (the dates' day) and ``now`` (the alerts' clock)
    default to the clock."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    local = local_base_model_names()
    done: list[LifecycleAlerted] = []
    due: dict[tuple[int, str], int] = {}  # (project, "<version>:<event>") -> its step now
    in_production: set[int] = set()
    for alias in production_aliases():
        version = alias.model_version
        in_production.add(version.pk)
        for event in binding_events(lifecycle_events_of(version, today)):
            step = countdown_step(event.days_left)
            if step is None:
                continue
            project_id = alias.registered_model.project_id
            due[(project_id, f"{version.pk}:{event.kind}")] = step
            raised = _step_raise(alias, event, step, local=local, now=now)
            if raised is not None:
                done.append(raised)
    done.extend(_stale_clear(due, in_production, now=now))
    return done


def _step_raise(
    alias: Alias, event: LifecycleEvent, step: int, *, local: list[str], now: dt.datetime
) -> LifecycleAlerted | None:
    version = alias.model_version
    project_id = alias.registered_model.project_id
    key = lifecycle_key(version.pk, event.kind, step)
    if _resolved_by_a_person(project_id, key):
        return None
    raised = alert_raise(
        AlertRaise(
            project_id=project_id,
            kind=AlertKind.LIFECYCLE,
            key=key,
            title=countdown_title(alias, event),
            message=countdown_message(alias, event, local=local),
            severity=STEP_SEVERITY[step],
            registered_model_id=alias.registered_model_id,
            model_version_id=version.pk,
            cooldown=STEP_COOLDOWN,
        ),
        now=now,
    )
    return LifecycleAlerted(
        project_id=project_id,
        key=key,
        alert_id=raised.alert.pk,
        severity=str(raised.alert.severity),
        created=raised.created,
    )


def _resolved_by_a_person(project_id: int, key: str) -> bool:
    return Alert.objects.filter(
        project_id=project_id, key=key, state=AlertState.RESOLVED, resolved_by__isnull=False
    ).exists()


def _stale_clear(
    due: dict[tuple[int, str], int], in_production: set[int], *, now: dt.datetime
) -> list[LifecycleAlerted]:
    """Resolve the unresolved countdown alerts that are not due now, saying why."""
    cleared = []
    unresolved = Alert.objects.filter(kind=AlertKind.LIFECYCLE, key__startswith=KEY_PREFIX).exclude(
        state=AlertState.RESOLVED
    )
    for alert in unresolved.order_by("id"):
        version_id, event, step = _key_parts(alert.key)
        current = due.get((alert.project_id, f"{version_id}:{event}"))
        if current == step:
            continue
        resolution = _resolution(version_id in in_production, current)
        resolved = alert_clear(
            project_id=alert.project_id, key=alert.key, resolution=resolution, now=now
        )
        if resolved is not None:
            cleared.append(
                LifecycleAlerted(
                    project_id=alert.project_id,
                    key=alert.key,
                    alert_id=resolved.pk,
                    severity=str(resolved.severity),
                    cleared=True,
                )
            )
    return cleared


def _key_parts(key: str) -> tuple[int, str, int]:
    """(version id, event, step) of a countdown key; (0, "", -1) for one of another shape."""
    parts = key.removeprefix(KEY_PREFIX).split(":")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
        return 0, "", -1
    return int(parts[0]), parts[1], int(parts[2])


def _resolution(in_production: bool, current: int | None) -> str:
    if not in_production:
        return "The version is no longer behind a production alias."
    if current is None:
        return (
            f"The date moved beyond {HORIZON_DAYS} days or was removed, or an end with the "
            "same consequence now comes first."
        )
    if current == 0:
        return "Replaced by the alert of the day itself."
    return f"Replaced by the {current}-day alert."


# --- words ----------------------------------------------------------------------------------


def _when(days_left: int) -> str:
    if days_left == 0:
        return "today"
    if days_left == 1:
        return "tomorrow"
    if days_left < 0:
        return f"{-days_left} day{'s' if days_left < -1 else ''} ago"
    return f"in {days_left} days"


def _version_label(alias: Alias) -> str:
    return f"{alias.registered_model.name} v{alias.model_version.number}"


def countdown_title(alias: Alias, event: LifecycleEvent) -> str:
    """One line: which version, what happens, when."""
    label, day = _version_label(alias), event.date.isoformat()
    if event.stops_serving:
        if event.passed:
            return f"{label} was shut down on {day} ({_when(event.days_left)})"
        return f"{label} stops serving on {day} ({_when(event.days_left)})"
    where = _retraining_where(event)
    if event.passed:
        return f"{label} can no longer be retrained {where} (since {day})"
    return f"{label} can no longer be retrained {where} from {day} ({_when(event.days_left)})"


def _retraining_where(event: LifecycleEvent) -> str:
    return "at its endpoint" if event.kind == LifecycleEventKind.FINE_TUNING_ENDS else "on its base"


def countdown_message(alias: Alias, event: LifecycleEvent, *, local: list[str]) -> str:
    """What happens on which date, how many days are left, and the local path."""
    label = _version_label(alias)
    words = event.words[0].upper() + event.words[1:]
    return " ".join([f"{words}.", _consequence(label, event), _local_path(local)])


def _consequence(label: str, event: LifecycleEvent) -> str:
    left = _days_left(event.days_left)
    if event.stops_serving and event.passed:
        return (
            f"In production, {label} has not answered since {event.date} "
            f"({_when(event.days_left)}): move production to another version."
        )
    if event.stops_serving:
        return (
            f"{left}: {label}, in production, stops serving on {event.date} unless production "
            "moves to another version first."
        )
    if event.passed:
        return f"In production, {label} cannot be retrained the same way any more."
    return (
        f"{left} to retrain {label}, in production, the same way; from {event.date} it cannot be."
    )


def _days_left(days: int) -> str:
    return f"{days} day{'s' if days != 1 else ''} left"


def _local_path(local: list[str]) -> str:
    proposal = "The project's retraining proposal page can prefill it."
    if not local:
        return (
            "One option is the local path: retraining with the local LoRA trainer on a local "
            f"base model, once an admin adds one to the catalog. {proposal}"
        )
    return (
        "One option is the local path: retraining on a local base model with the local LoRA "
        f"trainer (the catalog's active local base models: {', '.join(local)}), which no "
        f"provider's date ends. {proposal}"
    )
