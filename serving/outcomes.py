"""Outcomes the application reports against an answer's request id, through the gateway:
``POST /v1/feedback`` (thumbs or a score, a comment, the answer it should have been) and
``POST /v1/events`` (a business event such as ``ticket_resolved``, with an optional value), so
that versions and experiment arms are judged on the application's own results.

Authenticated like every /v1/ call, by the application key alone (``gateway.caller_admitted``: 401,
403, 429), answered in OpenAI's error shape, each invalid field named (400).

Which request ids a key may report on: its own project's. The log is written in batches off
the request path, so a request answered a moment ago may have no row yet. An id is accepted
when this process queued its row for the key's project (``request_log_recent_project``: every
row not yet stored is among those), or when its stored row is the project's. One behind
another gateway process, not stored yet, gets one more look after a batch window of the
log's writer. Anything else, another project's request included, is the same 404: ids are
random and unguessable, and the answer does not say whether another project has one.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .gateway import Caller, GatewayError, _in_thread, _invalid, caller_admitted
from .models import (
    FEEDBACK_COMMENT_MAX_LENGTH,
    OUTCOME_NAME_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    Feedback,
    OutcomeEvent,
)
from .request_log import request_log_recent_project
from .selectors import request_log_project_id
from .services import feedback_record, outcome_event_record

THUMB_SCORES = {"up": 1.0, "down": 0.0}
CORRECTION_MAX_LENGTH = 32_000
FEEDBACK_USER_MAX_LENGTH = Feedback._meta.get_field("caller_user").max_length or 200
FEEDBACK_FIELDS = ("request_id", "thumbs", "score", "comment", "correction", "user")
EVENT_FIELDS = ("request_id", "name", "value")


# --- the body -----------------------------------------------------------------------------------


def _json_object(raw: bytes, *, fields: Iterable[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``fields`` in it (a misspelt field is an error,
    not silently ignored)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The body must be a JSON object.", code="invalid_json")
    known = tuple(fields)
    for name in body:
        if name not in known:
            raise _invalid(name, f"not a field here; the fields are {', '.join(known)}.")
    return body


def _request_id(body: dict[str, Any]) -> str:
    value = body.get("request_id")
    if not isinstance(value, str) or not value.strip() or len(value) > REQUEST_ID_MAX_LENGTH:
        raise _invalid(
            "request_id", "the id of an answer of the gateway (its `id`, such as req_3f…)."
        )
    return value.strip()


def _text(body: dict[str, Any], name: str, max_length: int) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise _invalid(name, f"a string of at most {max_length} characters.")
    return value


def _number(value: object) -> float | None:
    """``value`` as a finite number; None when it is not one (a boolean is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _score(body: dict[str, Any]) -> float:
    thumbs, score = body.get("thumbs"), body.get("score")
    if thumbs is not None and score is not None:
        raise _invalid("score", "give thumbs or a score, not both.")
    if thumbs is not None:
        if thumbs not in THUMB_SCORES:
            raise _invalid("thumbs", '"up" or "down".')
        return THUMB_SCORES[thumbs]
    if score is None:
        raise _invalid("thumbs", 'give thumbs ("up" or "down") or a score from 0 to 1.')
    number = _number(score)
    if number is None or not 0 <= number <= 1:
        raise _invalid("score", "a number from 0 to 1.")
    return number


def _event_name(body: dict[str, Any]) -> str:
    value = body.get("name")
    if not isinstance(value, str) or not value.strip() or len(value) > OUTCOME_NAME_MAX_LENGTH:
        raise _invalid(
            "name",
            f"the event's name, such as ticket_resolved (at most {OUTCOME_NAME_MAX_LENGTH} "
            "characters).",
        )
    return value.strip()


def _event_value(body: dict[str, Any]) -> float:
    if body.get("value") is None:
        return 1.0
    number = _number(body["value"])
    if number is None:
        raise _invalid("value", "a finite number (1 when left out).")
    return number


# --- whose request ------------------------------------------------------------------------------


def _owner(request_id: str) -> int | None:
    """The project of ``request_id``: this process's recent answers first (their rows may be
    queued still), then the stored log."""
    recent = request_log_recent_project(request_id)
    return recent if recent is not None else request_log_project_id(request_id)


# The longest an unknown id is waited for, however long the writer's batch window is set.
MAX_UNSTORED_WAIT_SECONDS = 2.0


async def _stored_elsewhere_wait() -> None:
    """Time for another gateway process to store a row it has queued: its writer stores a
    batch within one window (FTPORTAL_REQUEST_LOG_BATCH_MS, 200 ms by default); two windows
    cover a batch already being written."""
    window = int(settings.FTPORTAL_REQUEST_LOG_BATCH_MS) / 1000
    await asyncio.sleep(min(2 * window, MAX_UNSTORED_WAIT_SECONDS))


async def _check_request_is_the_callers(caller: Caller, request_id: str) -> None:
    owner = await _in_thread(lambda: _owner(request_id))
    if owner is None:
        await _stored_elsewhere_wait()
        owner = await _in_thread(lambda: request_log_project_id(request_id))
    if owner != caller.project.pk:
        raise GatewayError(
            404,
            f"request_id: no request {request_id} of this key's project. Send the `id` of an "
            "answer this project's key received.",
            param="request_id",
            code="request_not_found",
        )


# --- answers ------------------------------------------------------------------------------------


def feedback_body(feedback: Feedback) -> dict[str, Any]:
    thumbs = next((name for name, score in THUMB_SCORES.items() if score == feedback.score), None)
    return {
        "object": "feedback",
        "request_id": feedback.request_id,
        "score": feedback.score,
        "thumbs": thumbs,
        "comment": feedback.comment,
        "correction": feedback.correction,
        "user": feedback.caller_user,
        "created_at": int(feedback.created_at.timestamp()),
        "updated_at": int(feedback.updated_at.timestamp()),
    }


def event_body(event: OutcomeEvent) -> dict[str, Any]:
    return {
        "object": "event",
        "id": event.pk,
        "request_id": event.request_id,
        "name": event.name,
        "value": event.value,
        "created_at": int(event.created_at.timestamp()),
    }


async def _authenticated_body(request: HttpRequest) -> tuple[Caller, bytes]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise GatewayError(413, "The request is too large.", code="request_too_large") from None
    return await caller_admitted(request.headers.get("Authorization")), raw


@csrf_exempt
async def feedback(request: HttpRequest) -> HttpResponse:
    """``POST /v1/feedback``: the application's feedback on one answer, replacing any earlier
    (201 the first time, 200 after)."""
    caller: Caller | None = None
    try:
        caller, raw = await _authenticated_body(request)
        body = _json_object(raw, fields=FEEDBACK_FIELDS)
        request_id = _request_id(body)
        score = _score(body)
        comment = _text(body, "comment", FEEDBACK_COMMENT_MAX_LENGTH)
        correction = _text(body, "correction", CORRECTION_MAX_LENGTH)
        user = _text(body, "user", FEEDBACK_USER_MAX_LENGTH)
        await _check_request_is_the_callers(caller, request_id)
        known = caller
        stored, created = await _in_thread(
            lambda: feedback_record(
                key=known.key,
                request_id=request_id,
                score=score,
                comment=comment,
                correction=correction,
                caller_user=user,
            )
        )
    except GatewayError as error:
        if caller is not None:
            error.headers.update(caller.rate.headers())
        return error.response()
    return JsonResponse(
        feedback_body(stored), status=201 if created else 200, headers=caller.rate.headers()
    )


@csrf_exempt
async def events(request: HttpRequest) -> HttpResponse:
    """``POST /v1/events``: one business event on one answer (any number per answer)."""
    caller: Caller | None = None
    try:
        caller, raw = await _authenticated_body(request)
        body = _json_object(raw, fields=EVENT_FIELDS)
        request_id = _request_id(body)
        name = _event_name(body)
        value = _event_value(body)
        await _check_request_is_the_callers(caller, request_id)
        known = caller
        stored = await _in_thread(
            lambda: outcome_event_record(
                key=known.key, request_id=request_id, name=name, value=value
            )
        )
    except GatewayError as error:
        if caller is not None:
            error.headers.update(caller.rate.headers())
        return error.response()
    return JsonResponse(event_body(stored), status=201, headers=caller.rate.headers())
