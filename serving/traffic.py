"""The gateway's one call site for its request log: every authenticated request the gateway
answered past its key and rate limit (served, refused as invalid or unknown, or failed) is
handed to
:func:`served_request_record`, with everything a log row needs.

It does nothing yet: the request log (issue 15, item 4) is built separately, and wiring it is
this one function's body. Requests refused for their key (401) never reach it, so nothing is
recorded as a project's traffic that the project's key did not send; nor do those over the
key's rate limit (429), which the limiter counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftportal.models import Project
from providers.base import Conversation
from registry.models import ModelVersion

from .models import ApplicationKey


@dataclass(frozen=True)
class ServedRequest:
    """One answered request, as the gateway saw it.

    ``requested_model`` is the name the application sent; ``served_version`` the version that
    name resolved to (None when it resolved to nothing: a 400, 403 or 404). ``status_code`` is
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


def served_request_record(*, served: ServedRequest) -> None:
    """Hands one answered request to the request log. Called on the gateway's event loop,
    after the answer is ready: whatever it does must not block (queue the row, write it in
    batches elsewhere). For now it does nothing."""
    del served
