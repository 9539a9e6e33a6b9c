"""Idempotent launches: a client sends a key with a request that creates something (the
launch page renders a fresh one into its form; API clients send an ``Idempotency-Key``
header), and a repeat of that request (a double click, a retry after a timeout) gets the
object the first one created instead of a second one.

Keys are honoured for IDEMPOTENCY_WINDOW (24 hours, as Stripe does); after that the same key
starts a new launch. They are per user, per project and per kind of launch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter

from .errors import ApplicationError, ConflictError
from .models import IdempotencyKey, Project

IDEMPOTENCY_WINDOW = datetime.timedelta(hours=24)
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The form field the launch pages render a fresh key into.
IDEMPOTENCY_FORM_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 255

Created = TypeVar("Created", bound=models.Model)


@dataclass(frozen=True)
class Once(Generic[Created]):
    """What a launch answered: the object, and whether this request created it."""

    obj: Created
    created: bool


def request_fingerprint(parameters: dict[str, Any]) -> str:
    """A stable hash of a request's parameters (ids, keys, numbers, text)."""
    canonical = json.dumps(parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def checked_key(raw: str, *, field: str = IDEMPOTENCY_HEADER) -> str:
    """The key as sent; visible ASCII of at most MAX_KEY_LENGTH characters (a UUID fits)."""
    key = raw.strip()
    if len(key) > MAX_KEY_LENGTH or not all(" " < char <= "~" for char in key):
        raise ApplicationError(
            f"{field} is at most {MAX_KEY_LENGTH} visible ASCII characters, such as a UUID.",
            extra={"field": field},
        )
    return key


def once_per_key(
    *,
    project: Project,
    user: User,
    scope: str,
    key: str,
    fingerprint: str,
    create: Callable[[], Created],
    load: Callable[[int], Created],
) -> Once[Created]:
    """``create()`` once per (project, user, scope, key) within IDEMPOTENCY_WINDOW; a repeat
    gets ``load(id)`` of what the first created. No key: always create.

    The key's row is inserted before ``create()`` runs, in the same transaction. A concurrent
    request with the same key blocks on the unique constraint until the first commits, then
    fails to insert and reads the first's object; if the first fails (its error rolls back the
    key too), the second creates. So two requests never both create."""
    if not key:
        return Once(create(), created=True)
    identity = {"project": project, "user": user, "scope": scope, "key": key}
    with transaction.atomic():
        # Keys past the window are forgotten: this one may name a new request, and the
        # user's other old keys go too, so the table holds about a day of launches.
        IdempotencyKey.objects.filter(
            project=project,
            user=user,
            scope=scope,
            created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW,
        ).delete()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(**identity, request_fingerprint=fingerprint)
        except IntegrityError:
            earlier = IdempotencyKey.objects.get(**identity)
            if earlier.request_fingerprint != fingerprint:
                raise ConflictError(
                    f"This {IDEMPOTENCY_HEADER} was used for a different request in the last "
                    f"{IDEMPOTENCY_WINDOW.total_seconds() / 3600:g} hours; send a new key.",
                    extra={"field": IDEMPOTENCY_HEADER},
                ) from None
            assert earlier.object_id is not None  # set in the transaction that inserted it
            return Once(load(earlier.object_id), created=False)
        obj = create()
        record.object_id = obj.pk
        record.save(update_fields=["object_id"])
        return Once(obj, created=True)


# The API side: one header parameter for the schema, one reader for the views.
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (a UUID, say) for this launch. Sending the same key again "
    f"within {IDEMPOTENCY_WINDOW.total_seconds() / 3600:g} hours answers 200 with what the "
    "first request created instead of creating another; the same key with a different body "
    "is a 409.",
)


def idempotency_key_of(request: HttpRequest) -> str:
    return checked_key(request.headers.get(IDEMPOTENCY_HEADER, ""))
