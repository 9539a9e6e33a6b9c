"""The gateway's one call site for its request log: every authenticated request the gateway
answered past its key and rate limit (served, refused as invalid or unknown, or failed) is
handed to :func:`served_request_record`, which queues its row for the request log's writer.

Requests refused for their key (401) never reach it, so nothing is recorded as a project's
traffic that the project's key did not send; nor do those over the key's rate limit (429),
which the limiter counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog.models import BaseModel
from ftportal.models import Project
from providers.base import Conversation
from registry.models import ModelVersion

from .fallbacks import FallbackUse
from .models import ApplicationKey, RequestStatus
from .request_log import RequestLogEntry, request_log_enqueue


@dataclass(frozen=True)
class ServedRequest:
    """One answered request, as the gateway saw it.

    ``requested_model`` is the name the application sent; ``served_version`` the version that
    answered: the one the name resolved to (None when it resolved to nothing: a 400, 403 or
    404), or its fallback route's. ``status_code`` is
    the HTTP status answered and ``error`` its message (empty when served).
    ``latency_seconds`` runs from the request's arrival to the answer being ready (for a
    stream, before its chunks go out). ``caller_user`` is the request's ``user`` field, the
    application's id for its own user (empty when not sent).
    """

    request_id: str
    key: ApplicationKey
    project: Project
    requested_model: str
    served_version: ModelVersion | None
    messages: Conversation
    output: str
    status_code: int
    error: str
    latency_seconds: float
    prompt_tokens: int
    completion_tokens: int
    caller_user: str
    stream: bool
    extra: dict[str, str] = field(default_factory=dict)
    # The experiment arm that answered (``serving.experiments``), None outside an experiment.
    arm_id: int | None = None
    arm_name: str = ""
    # Set on a shadow arm's row: the id of the answered request it mirrored.
    shadow_of: str = ""
    # Set when the alias's fallback route answered (or was asked and failed too): then
    # ``served_version`` is the route's target version, or None with ``served_base_model``.
    fallback: FallbackUse | None = None
    served_base_model: BaseModel | None = None


def served_request_record(*, served: ServedRequest) -> bool:
    """Hands one answered request to the request log. Called on the gateway's event loop,
    after the answer is ready, so it only queues the row (the writer stores it in batches on
    its own thread); False when the queue was full and the row was dropped (and counted)."""
    return request_log_enqueue(
        RequestLogEntry(
            project_id=served.project.pk,
            requested_model=served.requested_model,
            messages=list(served.messages),
            status=_status_of(served.status_code, fallback=served.fallback is not None),
            latency_ms=round(served.latency_seconds * 1000),
            request_id=served.request_id,
            application_key_id=served.key.pk,
            served_version_id=served.served_version.pk if served.served_version else None,
            output=served.output,
            error=served.error,
            prompt_tokens=served.prompt_tokens if served.status_code < 400 else None,
            completion_tokens=served.completion_tokens if served.status_code < 400 else None,
            # Priced where the log is written (serving.spending), not on the request path.
            cost=None,
            caller_user=served.caller_user,
            arm_id=served.arm_id,
            experiment_arm=served.arm_name,
            shadow_of=served.shadow_of,
            served_base_model_id=served.served_base_model.pk if served.served_base_model else None,
            fallback_route_id=served.fallback.route.pk if served.fallback else None,
            fallback_cause=served.fallback.cause if served.fallback else "",
            fallback_reason=served.fallback.reason if served.fallback else "",
        )
    )


def _status_of(status_code: int, *, fallback: bool) -> str:
    if status_code < 400:
        return RequestStatus.FALLBACK if fallback else RequestStatus.OK
    return RequestStatus.REFUSED if status_code < 500 else RequestStatus.ERROR
