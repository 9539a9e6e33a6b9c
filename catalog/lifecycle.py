"""When base models go away: the catalog's lifecycle dates read from the providers' own model
lists (issue 17, item 4), and the events those dates make for what was fine-tuned from them.

Refresh (daily, ``catalog.tasks.lifecycle_refresh_daily``; ``manage.py lifecycle_refresh``):
every enabled OpenAI or OpenAI-compatible endpoint that some base model names (the kinds a
hosted base model may name) is asked for its model list (``providers.openai_models``) with the
endpoint's own key, read by ``catalog.secrets``. A base model of that endpoint whose key is
listed with a ``shutdown_date`` gets it as ``retires_at``: an announced date wins over whatever
was there, an earlier announcement or an admin's manual entry alike, and ``lifecycle_source``
says where it came from ("OpenAI GET /v1/models, <day read>", an admin's entry kept after it).
A model listed without a date, or not listed at all, keeps its dates: a list that stops saying
a date is no announcement that the shutdown is off, and a manual entry stays. Every listed
model's ``lifecycle_checked_at`` records the check. A list that cannot be read is logged by
endpoint name (never with the key) and changes nothing; the next day's run asks again.

Events (:func:`base_model_lifecycle_events`): the base model's shutdown (``retires_at``) and
the end of inference on its fine-tuned models (``fine_tuned_inference_ends_at``), after which a
version on it stops serving; the end of new fine-tuning jobs on the base (``deprecated_at``)
and at its endpoint (``Endpoint.fine_tuning_ends_at``), after which it cannot be retrained
there. Pages and monitors read them from here, each with its date, days left and words.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from providers.base import ProviderError
from providers.openai_models import ListedModel, listed_models

from .models import BaseModel, Endpoint, EndpointKind
from .secrets import endpoint_credentials, model_refusal

logger = logging.getLogger(__name__)

WHO = "Lifecycle check"
# The kinds a hosted base model may name (BaseModel.clean), each speaking OpenAI's model list.
REFRESHED_KINDS = (EndpointKind.OPENAI, EndpointKind.OPENAI_COMPATIBLE)
# What marks a lifecycle_source as the provider's list rather than a person's entry.
PROVIDER_MARK = "GET /v1/models"
# Joins the provider's statement to the manual entry it replaced (kept for the other dates).
BEFORE = "; before: "
SOURCE_MAX = 300


# --- events ---------------------------------------------------------------------------------


class LifecycleEventKind(StrEnum):
    RETIRES = "retires"
    INFERENCE_ENDS = "inference_ends"
    DEPRECATED = "deprecated"
    FINE_TUNING_ENDS = "fine_tuning_ends"


# After these a model fine-tuned from the base stops serving; after the others it can no
# longer be retrained there.
SERVING_ENDS = frozenset({LifecycleEventKind.RETIRES, LifecycleEventKind.INFERENCE_ENDS})
# Events of one day are listed in this order.
KIND_ORDER = {kind: order for order, kind in enumerate(LifecycleEventKind)}


@dataclass(frozen=True)
class LifecycleEvent:
    """One dated end that concerns the models fine-tuned from a base model: what, when, how
    many days are left (0 on the day, negative after it) and what it means, in words."""

    kind: LifecycleEventKind
    date: dt.date
    days_left: int
    words: str

    @property
    def stops_serving(self) -> bool:
        return self.kind in SERVING_ENDS

    @property
    def passed(self) -> bool:
        return self.days_left <= 0


def base_model_lifecycle_events(base_model: BaseModel, *, today: dt.date) -> list[LifecycleEvent]:
    """Every dated end of ``base_model`` (its endpoint's end of fine-tuning included), soonest
    first; past ones too, with days_left at or under 0."""
    endpoint = base_model.endpoint
    dated = [
        (LifecycleEventKind.RETIRES, base_model.retires_at),
        (LifecycleEventKind.INFERENCE_ENDS, base_model.fine_tuned_inference_ends_at),
        (LifecycleEventKind.DEPRECATED, base_model.deprecated_at),
        (LifecycleEventKind.FINE_TUNING_ENDS, endpoint.fine_tuning_ends_at if endpoint else None),
    ]
    events = [
        LifecycleEvent(
            kind=kind,
            date=day,
            days_left=(day - today).days,
            words=event_words(kind, base_model, day=day, passed=day <= today),
        )
        for kind, day in dated
        if day is not None
    ]
    return sorted(events, key=lambda event: (event.date, KIND_ORDER[event.kind]))


def event_words(
    kind: LifecycleEventKind, base_model: BaseModel, *, day: dt.date, passed: bool
) -> str:
    """What an event of ``base_model`` means, before its day or from it (lower case first)."""
    name, on = base_model.display_name, day.isoformat()
    if kind == LifecycleEventKind.RETIRES:
        if passed:
            return (
                f"{name} shut down on {on}, and every model fine-tuned from it stopped serving "
                "with it"
            )
        return (
            f"{name} shuts down on {on}, and every model fine-tuned from it stops serving with it"
        )
    if kind == LifecycleEventKind.INFERENCE_ENDS:
        verb = "stopped" if passed else "stop"
        return f"models fine-tuned from {name} {verb} serving on {on}"
    if kind == LifecycleEventKind.DEPRECATED:
        if passed:
            return (
                f"{name} takes no new fine-tuning jobs since {on}: retraining needs another base "
                "model"
            )
        return (
            f"{name} takes no new fine-tuning jobs from {on}: retraining after that needs "
            "another base model"
        )
    endpoint = base_model.endpoint
    where = f"the endpoint {endpoint.name} ({endpoint.get_kind_display()})" if endpoint else ""
    if passed:
        return (
            f"{where} accepts no new fine-tuning jobs since {on}: retraining needs another "
            "provider or a local base model"
        )
    return (
        f"{where} accepts no new fine-tuning jobs from {on}: retraining after that needs "
        "another provider or a local base model"
    )


# --- refresh --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleRefreshed:
    """What one endpoint's check did: the base models it found listed, those whose
    ``retires_at`` it set or moved, those the list left out (unchanged), or why it changed
    nothing (``error``, as logged)."""

    endpoint: str
    checked: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    error: str = ""


def lifecycle_endpoints() -> QuerySet[Endpoint]:
    """The endpoints whose model list is read: enabled, of a kind that lists shutdown dates,
    and named by some base model."""
    return (
        Endpoint.objects.filter(enabled=True, kind__in=REFRESHED_KINDS, base_models__isnull=False)
        .distinct()
        .order_by("name")
    )


def lifecycle_refresh(*, now: dt.datetime | None = None) -> list[LifecycleRefreshed]:
    """Check every endpoint of :func:`lifecycle_endpoints` (at ``now``, the clock when None).
    One endpoint's failure leaves the others' work done."""
    checked_at = now or timezone.now()
    return [
        endpoint_lifecycle_refresh(endpoint=endpoint, now=checked_at)
        for endpoint in lifecycle_endpoints()
    ]


def endpoint_lifecycle_refresh(*, endpoint: Endpoint, now: dt.datetime) -> LifecycleRefreshed:
    """Read ``endpoint``'s model list and bring its base models' shutdown dates up to it;
    nothing changes when the list cannot be read."""
    base_models = list(BaseModel.objects.filter(endpoint=endpoint).order_by("key"))
    try:
        listed = _listed(endpoint, base_models)
    except ProviderError as error:
        message = f"{WHO}: endpoint {endpoint.name}: {error} No base model was changed."
        logger.error("%s", message)
        return LifecycleRefreshed(endpoint=endpoint.name, error=message)
    source = provider_source(endpoint, day=timezone.localdate(now))
    found = [model for model in base_models if model.key in listed]
    with transaction.atomic():
        changed = [
            model.key
            for model in found
            if _retires_at_update(model, listed[model.key].shutdown_date, source=source, now=now)
        ]
        BaseModel.objects.filter(pk__in=[model.pk for model in found]).update(
            lifecycle_checked_at=now
        )
    return LifecycleRefreshed(
        endpoint=endpoint.name,
        checked=tuple(model.key for model in found),
        changed=tuple(changed),
        unlisted=tuple(model.key for model in base_models if model.key not in listed),
    )


def _listed(endpoint: Endpoint, base_models: list[BaseModel]) -> dict[str, ListedModel]:
    """The endpoint's list by model id. The key is read for a base model it may be asked
    for; it goes to this endpoint's URL only."""
    asked = next((m for m in base_models if not model_refusal(endpoint, model=m.key)), None)
    if asked is None:
        raise ProviderError("none of its base models is among the models it may be asked for.")
    credentials = endpoint_credentials(endpoint, model=asked.key, who=WHO)
    models = listed_models(
        api_key=credentials.api_key,
        base_url=credentials.base_url,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
    )
    return {model.id: model for model in models}


def provider_source(endpoint: Endpoint, *, day: dt.date) -> str:
    """What ``lifecycle_source`` says of a date read from ``endpoint``'s list on ``day``."""
    who = "OpenAI" if endpoint.kind == EndpointKind.OPENAI else f"Endpoint {endpoint.name}"
    return f"{who} {PROVIDER_MARK}, {day.isoformat()}"


def _retires_at_update(
    model: BaseModel, announced: dt.date | None, *, source: str, now: dt.datetime
) -> bool:
    """Set the model's shutdown day to the one its provider announced; False when none is
    announced or it is the day already recorded."""
    if announced is None or announced == model.retires_at:
        return False
    logger.info(
        "%s: %s shuts down on %s, says %s (was: %s).",
        WHO,
        model.key,
        announced,
        source,
        model.retires_at or "no date",
    )
    model.retires_at = announced
    model.lifecycle_source = source_after(model.lifecycle_source, provider=source)
    model.lifecycle_checked_at = now
    model.save(update_fields=["retires_at", "lifecycle_source", "lifecycle_checked_at"])
    return True


def source_after(previous: str, *, provider: str) -> str:
    """The source once the provider's list set the shutdown day: the provider's statement,
    followed by the manual entry it replaced (which may still hold the other dates)."""
    manual = previous.split(BEFORE, 1)[1] if BEFORE in previous else previous
    if PROVIDER_MARK in manual:
        manual = ""
    joined = f"{provider}{BEFORE}{manual}" if manual else provider
    return joined[:SOURCE_MAX]
