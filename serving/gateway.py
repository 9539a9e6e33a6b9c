"""The OpenAI-compatible gateway under /v1/: what applications call instead of a provider.

``GET /v1/models`` lists the names the calling key's project serves and ``POST
/v1/chat/completions`` answers one conversation with the version a name resolves to at that
moment (``serving.model_names``), plainly or streamed as server-sent events. The official
``openai`` client works unchanged with ``base_url=<site>/v1`` and an application key as its
``api_key``.

Each request, in order: the key (401 without a valid one, before anything else is read), its
rate limit (429 with Retry-After), its project's budget (429 ``insufficient_quota`` naming the
budget once its hard cap is reached: ``serving.refusals``), the body (400 naming the field),
the model name (404 unknown, 403 another project's; through an alias with a running
experiment, the caller's arm: ``serving.experiments``), then the backend (502 when it refuses,
503 when it is unreachable or overloaded). A name that goes through an alias with a fallback
route is answered by the route's target when the version fails, outlives the route's timeout
or has its circuit open (``_answer``, ``serving.fallbacks``, ``serving.breaker``); the
answer's ``model`` names what answered, and only when both fail is the request an error.
Errors answer in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. Only an
application key authenticates here: no session, no CSRF token.

Under an ASGI server (``uvicorn config.asgi:application``); the chat path is a plain ASGI
application (:func:`chat_completions`). Database reads and blocking generation run in the
gateway's threads, backends reached over HTTP on the event loop
(``providers.base.AsyncChatModel``). A stream from a backend that streams is relayed piece by
piece once its first piece is in (so a failure before any text still gets its status code);
one from a backend that answers whole is sent as a run of chunks once the answer is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from catalog.models import BaseModel
from ftportal.models import Project
from providers.base import (
    AsyncChatModel,
    ChatModel,
    ChatResult,
    Conversation,
    LiveAnswer,
    ProviderError,
    TransientProviderError,
)
from registry.models import ModelVersion

from .admission import Admission, admission_kept, admission_read
from .backends import (
    backend_answer,
    backend_answer_async,
    backend_chat_model,
    base_model_backend_chat,
)
from .breaker import breakers
from .experiments import Routed, ShadowRequest, experiment_route, shadow_submit
from .fallbacks import FallbackUse, fallback_targets
from .model_names import (
    OtherProjectModelName,
    UnknownModelName,
    pinned_model_name,
    served_model_names,
)
from .models import ApplicationKey, FallbackCause, FallbackRoute, RequestLog
from .plans import ServingPlan, serving_plan, serving_plan_kept, serving_plans_generation
from .request_log import new_request_id
from .services import ApplicationKeyRefused, RateDecision
from .traffic import ServedRequest, served_request_record

MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant"})
# A backend's answers that refuse one request as invalid (too long a conversation, say): the
# backend is up, so they do not count toward opening its circuit (serving.breaker).
REQUEST_REFUSALS = frozenset({400, 413, 422})
# The log's caller_user column: a longer id would fail the writer's whole batch (others' rows).
MAX_USER_LENGTH = RequestLog._meta.get_field("caller_user").max_length or 200
# A streamed answer goes out a word at a time (with the spaces before it).
STREAM_PIECE = re.compile(r"\s*\S+|\s+$")

Result = TypeVar("Result")
logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """An answer in OpenAI's error shape, with its status code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        # Set for a backend that refused this request as invalid: it answered, so its
        # breaker does not count the refusal (``_answer``).
        self.backend_answered = False

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        return JsonResponse(self.payload(), status=self.status, headers=self.headers)


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, f"{param}: {message}", param=param, code="invalid_value")


# The gateway's own threads, for database reads and for backends that block (a model in this
# process, Anthropic's SDK), each holding one while it answers: asyncio's default pool of
# min(32, cores + 4) would cap those requests in flight.
_threads = ThreadPoolExecutor(
    max_workers=int(settings.FTPORTAL_GATEWAY_THREADS), thread_name_prefix="gateway"
)


async def _in_thread(work: Callable[[], Result]) -> Result:
    """``work`` (ORM reads, a blocking generation) in one of the gateway's threads, its
    database connection given back afterwards as the request cycle would (the thread is not
    the request's)."""

    def run() -> Result:
        try:
            return work()
        finally:
            close_old_connections()

    return await sync_to_async(run, thread_sensitive=False, executor=_threads)()


# --- the key and its limit ----------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    key: ApplicationKey
    project: Project
    rate: RateDecision
    # The plans' generation token seen while admitting the request (serving.plans).
    plans_generation: str | None = None
    # Why the project's chat requests are refused (its budget's hard cap); None: served.
    refusal: str | None = None


def _caller_of(admission: Admission) -> Caller:
    """The admitted request's caller; GatewayError 429 when it is over its key's limit."""
    key, rate = admission.key, admission.rate
    if not rate.allowed:
        raise GatewayError(
            429,
            f"Rate limit reached for the application key {key.prefix}: "
            f"{rate.limit} requests per minute. Try again in {rate.retry_after_seconds}s.",
            type="requests",
            code="rate_limit_exceeded",
            headers=rate.headers(),
        )
    return Caller(
        key=key,
        project=key.project,
        rate=rate,
        plans_generation=admission.plans_generation,
        refusal=admission.refusal,
    )


def _chat_allowed(caller: Caller) -> None:
    """GatewayError 429 in the shape OpenAI answers an exhausted quota with, naming the budget,
    when the caller's project may spend nothing more (``serving.refusals``). Only the chat path
    spends: the model list, feedback and events are still answered."""
    if caller.refusal is None:
        return
    raise GatewayError(
        429,
        caller.refusal,
        type="insufficient_quota",
        code="insufficient_quota",
        # Trying again changes nothing until a lead raises the budget or the month ends; the
        # openai client obeys this header instead of retrying a 429.
        headers={"x-should-retry": "false"},
    )


def _admission_read(authorization: str | None) -> Admission:
    """``serving.admission.admission_read`` with its refusals as GatewayError 401/403."""
    try:
        return admission_read(authorization)
    except ApplicationKeyRefused as refused:
        code = "invalid_api_key" if refused.status_code == 401 else "permission_denied"
        raise GatewayError(refused.status_code, str(refused), code=code) from None


async def caller_admitted(authorization: str | None) -> Caller:
    """The request's caller: its key (401/403 without a live one, before anything else is
    read) and its rate decision (429 over its limit). A key admitted a moment ago is admitted
    again on the event loop in one Redis round trip (``serving.admission``); any other goes
    to Postgres in a thread."""
    admission = await admission_kept(authorization)
    if admission is None:
        admission = await _in_thread(lambda: _admission_read(authorization))
    return _caller_of(admission)


# --- the request body ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Conversation
    max_tokens: int
    temperature: float
    stream: bool
    include_usage: bool
    user: str


def _content(position: int, content: object) -> str:
    """A message's text: a string, or OpenAI's list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid(f"messages[{position}].content", "only text parts are served here.")
            text = part.get("text")
            if not isinstance(text, str):
                raise _invalid(f"messages[{position}].content", "a text part needs its text.")
            texts.append(text)
        return "".join(texts)
    raise _invalid(f"messages[{position}].content", "a string or a list of text parts.")


def _messages(value: object) -> Conversation:
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "a non-empty list of messages.")
    messages: Conversation = []
    for position, message in enumerate(value):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{position}]", "an object with a role and a content.")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            raise _invalid(
                f"messages[{position}].role", f"one of {', '.join(sorted(MESSAGE_ROLES))}."
            )
        messages.append({"role": role, "content": _content(position, message.get("content"))})
    return messages


def _max_tokens(body: dict[str, Any]) -> int:
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    value = body.get(param)
    if value is None:
        return int(settings.FTPORTAL_GATEWAY_DEFAULT_MAX_TOKENS)
    ceiling = int(settings.FTPORTAL_GATEWAY_MAX_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise _invalid(param, f"a whole number from 1 to {ceiling}.")
    return value


def _chat_request(raw: bytes) -> ChatRequest:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model", "the name of a served model (GET /v1/models lists them).")
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _invalid("temperature", "a number from 0 to 2.")
    if not 0 <= temperature <= 2:
        raise _invalid("temperature", "a number from 0 to 2.")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _invalid("stream", "true or false.")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _invalid("stream_options", "an object.")
    include_usage = options.get("include_usage") or False
    if not isinstance(include_usage, bool):
        raise _invalid("stream_options.include_usage", "true or false.")
    if options and not stream:
        raise _invalid("stream_options", "only with stream true.")
    choices = body.get("n")
    if choices not in (None, 1):
        raise _invalid("n", "only 1 answer per request is served.")
    user = body.get("user") or ""
    if not isinstance(user, str) or len(user) > MAX_USER_LENGTH:
        raise _invalid("user", f"a string of at most {MAX_USER_LENGTH} characters.")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        max_tokens=_max_tokens(body),
        temperature=float(temperature),
        stream=stream,
        include_usage=include_usage,
        user=user,
    )


# --- resolving and generating -------------------------------------------------------------


def _plan(project: Project, name: str, generation: str | None) -> ServingPlan:
    try:
        return serving_plan(project=project, name=name, generation=generation)
    except UnknownModelName as unknown:
        raise GatewayError(404, str(unknown), param="model", code="model_not_found") from None
    except OtherProjectModelName as other:
        raise GatewayError(403, str(other), param="model", code="permission_denied") from None


@dataclass(frozen=True)
class Planned:
    """How a request is served: its name's plan (``serving.plans``), and the version or
    experiment arm that answers it (``serving.experiments``)."""

    plan: ServingPlan
    routed: Routed

    @property
    def route(self) -> FallbackRoute | None:
        """The fallback route of the alias the name went through (None for none)."""
        return self.plan.route


def _plan_with_chats(project: Project, name: str, generation: str | None) -> ServingPlan:
    """:func:`_plan`, with the chats of what it serves looked up while in the thread (the
    resolved version and the experiment's arms), so its requests need no second thread hop.
    A chat that cannot be built is left out: the request that needs it says why."""
    plan = _plan(project, name, generation)
    served: list[ModelVersion | BaseModel] = [plan.resolution.version]
    for arm in plan.experiment.arms.all() if plan.experiment else []:
        served += [target for target in (arm.model_version, arm.base_model) if target]
    for target in served:
        if isinstance(target, ModelVersion):
            key, chat_of = ("version", target.pk), partial(backend_chat_model, target)
        else:
            key, chat_of = ("base", target.pk), partial(base_model_backend_chat, target)
        if key not in plan.chats:
            with contextlib.suppress(ProviderError):
                plan.chats[key] = chat_of()
    return plan


# Plans being read, per event loop: when a kept plan runs out, the requests that arrive during
# its reading wait for that one read instead of each reading it (bench/gateway.py: 50 reads
# at once, every second, were most of its p99).
_plans_reading: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop,
    dict[tuple[int, str, str, int, str | None], asyncio.Future[ServingPlan]],
] = weakref.WeakKeyDictionary()


async def _plan_read_once(project: Project, name: str, generation: str | None) -> ServingPlan:
    reading = _plans_reading.setdefault(asyncio.get_running_loop(), {})
    # A read started before the plans were last forgotten here, or under another generation
    # token than the one this request saw, may hold what changed since.
    key = (project.pk, project.name, name, serving_plans_generation(), generation)
    pending = reading.get(key)
    if pending is None:
        pending = reading[key] = asyncio.ensure_future(
            _in_thread(lambda: _plan_with_chats(project, name, generation))
        )
        pending.add_done_callback(lambda _: reading.pop(key, None))
    # Shielded: one waiter cancelled (its client gone) does not cancel the others' read.
    return await asyncio.shield(pending)


async def _planned(caller: Caller, chat_request: ChatRequest, request_id: str) -> Planned:
    """The request's plan, kept (on the event loop) or read (in a thread: 404 unknown, 403
    another project's), and its arm."""
    project, generation = caller.project, caller.plans_generation
    plan = serving_plan_kept(project=project, name=chat_request.model, generation=generation)
    if plan is None:
        plan = await _plan_read_once(project, chat_request.model, generation)
    routed = experiment_route(
        resolution=plan.resolution,
        experiment=plan.experiment,
        user=chat_request.user,
        request_id=request_id,
    )
    return Planned(plan, routed)


async def _chat(
    plan: ServingPlan, key: tuple[str, int], chat_of: Callable[[], ChatModel]
) -> ChatModel:
    """The backend chat for ``key``, looked up once per plan (in a thread: it may read rows)."""
    chat = plan.chats.get(key)
    if chat is None:
        chat = plan.chats[key] = await _in_thread(chat_of)
    return chat


async def _generate(
    plan: ServingPlan, version: ModelVersion, chat_request: ChatRequest
) -> ChatResult | LiveAnswer:
    """The version's answer; GatewayError 503 when its backend is unreachable or overloaded
    (worth trying again), 502 when it refused or failed otherwise."""
    return await _generate_with(
        plan,
        ("version", version.pk),
        lambda: backend_chat_model(version),
        pinned_model_name(version),
        chat_request,
    )


async def _generate_base(
    plan: ServingPlan, base_model: BaseModel, chat_request: ChatRequest
) -> ChatResult | LiveAnswer:
    """A catalog base model's own answer (a route's hosted fallback), failing as _generate."""
    return await _generate_with(
        plan,
        ("base", base_model.pk),
        lambda: base_model_backend_chat(base_model),
        base_model.key,
        chat_request,
    )


async def _generate_with(
    plan: ServingPlan,
    key: tuple[str, int],
    chat_of: Callable[[], ChatModel],
    name: str,
    chat_request: ChatRequest,
) -> ChatResult | LiveAnswer:
    """The answer of the chat ``chat_of`` builds: on the event loop for a backend reached
    over HTTP (``providers.base.AsyncChatModel``; for a stream request, streamed, returned
    once its first piece is in), else whole, in a thread (a model in this process,
    Anthropic's SDK)."""
    try:
        chat = await _chat(plan, key, chat_of)
        if isinstance(chat, AsyncChatModel):
            return await backend_answer_async(
                chat,
                chat_request.messages,
                max_tokens=chat_request.max_tokens,
                temperature=chat_request.temperature,
                stream=chat_request.stream,
            )
        blocking = chat
        return await _in_thread(
            lambda: backend_answer(
                blocking,
                chat_request.messages,
                max_tokens=chat_request.max_tokens,
                temperature=chat_request.temperature,
            )
        )
    except ProviderError as failure:
        plan.chats.pop(key, None)  # the backend drops it too: the next request builds anew
        transient = isinstance(failure, TransientProviderError) or getattr(
            failure, "retryable", False
        )
        # The backend's own words stay in the log: they may name endpoints and variables.
        logger.warning("gateway: the backend of %s failed: %s", name, failure)
        if transient:
            raise GatewayError(
                503,
                f"The backend of {name} is unavailable; try again later.",
                type="server_error",
                code="backend_unavailable",
            ) from None
        refused = GatewayError(
            502,
            f"The backend of {name} could not answer this request.",
            type="server_error",
            code="backend_error",
        )
        refused.backend_answered = failure.status_code in REQUEST_REFUSALS
        raise refused from None


# --- fallback routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A request's answer and what gave it: ``name`` is the answer's ``model`` (a pinned
    version, or a base model's key), ``version`` or ``base_model`` the row that answered, and
    ``fallback`` why the alias's route answered instead of the version the name resolved to."""

    result: ChatResult | LiveAnswer  # live: a stream whose first piece is in
    name: str
    version: ModelVersion | None
    base_model: BaseModel | None = None
    fallback: FallbackUse | None = None


class FallbackFailed(GatewayError):
    """The primary and the route's target both failed: the target's status, and the route's
    use for the log."""

    def __init__(self, target_error: GatewayError, fallback: FallbackUse) -> None:
        super().__init__(
            target_error.status,
            f"{fallback.reason}; its fallback failed too: {target_error.message}",
            type=target_error.type,
            code=target_error.code,
        )
        self.fallback = fallback


async def _answer(planned: Planned, chat_request: ChatRequest) -> Answer:
    """The answer for a routed request: an experiment's hosted-baseline arm's as it is (no
    route: the baseline is itself what a route would fall back to); else the version's, or,
    when the name goes through an alias with an enabled fallback route and the version fails,
    times out or its circuit is open, the route target's (``serving.fallbacks``,
    ``serving.breaker``). The route is the alias's whichever arm's version answers; the breaker
    is that version's."""
    plan, routed, route = planned.plan, planned.routed, planned.route
    if routed.arm is not None and routed.arm.base_model is not None:
        base = routed.arm.base_model
        return Answer(
            await _generate_base(plan, base, chat_request), base.key, None, base_model=base
        )
    version = routed.version
    assert version is not None  # an arm serves a version or a base model
    name = pinned_model_name(version)
    if route is None or route.fallback_version_id == version.pk:
        # No route, or the alias now serves the route's own target: nothing to fall back to.
        return Answer(await _generate(plan, version, chat_request), name, version)
    breaker_key = ("version", version.pk)  # one breaker per primary backend
    admission = breakers.admit(breaker_key)
    if not admission.ask_primary:
        cause = FallbackCause.CIRCUIT_OPEN
        reason = (
            f"the circuit of {name} is open after {admission.failures_in_a_row} failures in a "
            "row; it was not asked"
        )
    else:
        try:
            # A call that outlives the timeout is cancelled on the event loop; one in a thread
            # (a model in this process) runs on there and its answer is dropped.
            result = await asyncio.wait_for(
                _generate(plan, version, chat_request), route.timeout_seconds
            )
        except GatewayError as failure:
            cause, reason = FallbackCause.ERROR, f"{failure.code}: {failure.message}"
            backend_answered = failure.backend_answered
        except TimeoutError:
            cause = FallbackCause.TIMEOUT
            reason = f"the backend of {name} gave no answer within {route.timeout_seconds:g}s"
            backend_answered = False
        except BaseException:
            breakers.abandoned(breaker_key, admission)
            raise
        else:
            breakers.succeeded(breaker_key)
            return Answer(result, name, version)
        if backend_answered:
            # It refused this request, so the route's target is asked for it; the primary
            # itself is up, and callers sending bad requests must not open its circuit.
            breakers.succeeded(breaker_key)
        else:
            breakers.failed(
                breaker_key,
                failures_to_open=route.failures_to_open,
                cooldown_seconds=route.cooldown_seconds,
            )
    used = FallbackUse(route=route, cause=cause, reason=reason)
    try:
        target_version, target_base = await _in_thread(lambda: fallback_targets(route))
        if target_version is not None:
            return Answer(
                await _generate(plan, target_version, chat_request),
                pinned_model_name(target_version),
                target_version,
                fallback=used,
            )
        assert target_base is not None  # the table's check: exactly one target
        return Answer(
            await _generate_base(plan, target_base, chat_request),
            target_base.key,
            None,
            base_model=target_base,
            fallback=used,
        )
    except GatewayError as target_error:
        raise FallbackFailed(target_error, used) from None


def _mirror(caller: Caller, routed: Routed, chat_request: ChatRequest, request_id: str) -> None:
    """Hand the request to the shadow arm when it drew the shadow share: returns at once."""
    if routed.shadow is None:
        return
    shadow_submit(
        ShadowRequest(
            primary_request_id=request_id,
            key=caller.key,
            requested_model=chat_request.model,
            messages=chat_request.messages,
            max_tokens=chat_request.max_tokens,
            temperature=chat_request.temperature,
            caller_user=chat_request.user,
            target=routed.shadow,
        )
    )


# --- answers --------------------------------------------------------------------------------


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _finish_reason(result: ChatResult, chat_request: ChatRequest) -> str:
    return "length" if result.completion_tokens >= chat_request.max_tokens else "stop"


def _completion(
    request_id: str, served_name: str, result: ChatResult, chat_request: ChatRequest
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        # As OpenAI names the snapshot that answered: the version, pinned.
        "model": served_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": _finish_reason(result, chat_request),
            }
        ],
        "usage": _usage(result),
    }


def _event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


class _StreamChunks:
    """OpenAI's ``chat.completion.chunk`` events of one answer, as bytes to send."""

    def __init__(self, request_id: str, served_name: str, chat_request: ChatRequest) -> None:
        self.request_id = request_id
        self.served_name = served_name
        self.chat_request = chat_request
        self.created = int(time.time())

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.served_name,
        }

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        usage_field: dict[str, Any] = {"usage": None} if self.chat_request.include_usage else {}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**self._base(), "choices": [choice], **usage_field})

    def ending(self, result: ChatResult) -> list[bytes]:
        """The finish reason, the usage (when asked for), then ``[DONE]``."""
        events = [self.chunk({}, _finish_reason(result, self.chat_request))]
        if self.chat_request.include_usage:
            events.append(_event({**self._base(), "choices": [], "usage": _usage(result)}))
        return [*events, _event("[DONE]")]


async def _chunks(
    request_id: str, served_name: str, result: ChatResult, chat_request: ChatRequest
) -> AsyncIterator[bytes]:
    """A whole answer as a stream (a backend that does not stream: a model in this process):
    the role, the text a word at a time, then the ending."""
    chunks = _StreamChunks(request_id, served_name, chat_request)
    yield chunks.chunk({"role": "assistant", "content": ""})
    for piece in STREAM_PIECE.findall(result.text):
        yield chunks.chunk({"content": piece})
    for event in chunks.ending(result):
        yield event


@dataclass(frozen=True)
class LiveOutcome:
    """How a live stream ended, for its log row: the whole answer, or the failure and the
    text sent before it."""

    result: ChatResult | None = None
    failure: str = ""
    partial: str = ""


async def _live_chunks(
    request_id: str,
    served_name: str,
    live: LiveAnswer,
    chat_request: ChatRequest,
    ended: Callable[[LiveOutcome], None],
) -> AsyncIterator[bytes]:
    """A streamed answer relayed piece by piece as the backend sends it. A failure after the
    first piece can no longer change the status: the stream ends with OpenAI's error object as
    its last event (no ``[DONE]``). ``ended`` hears how it ended before the client does (its
    last events), so the request's row is queued by the time the client has the answer."""
    chunks = _StreamChunks(request_id, served_name, chat_request)
    sent: list[str] = []
    yield chunks.chunk({"role": "assistant", "content": ""})
    try:
        async for piece in live.pieces():
            sent.append(piece)
            yield chunks.chunk({"content": piece})
    except ProviderError as failure:
        logger.warning("gateway: the stream of %s broke: %s", served_name, failure)
        error = GatewayError(
            502,
            f"The backend of {served_name} stopped while answering.",
            type="server_error",
            code="backend_error",
        )
        ended(LiveOutcome(failure=error.message, partial="".join(sent)))
        yield _event(error.payload())
        return
    finally:
        live.close()  # the end, or the client went away: the backend's connection is done
    assert live.result is not None  # set once the last piece was given
    ended(LiveOutcome(result=live.result))
    for event in chunks.ending(live.result):
        yield event


# --- GET /v1/models (a Django view) -------------------------------------------------------


@csrf_exempt
@require_GET
async def models(request: HttpRequest) -> HttpResponse:
    """``GET /v1/models``: the names the key's project serves now (``serving.model_names``)."""
    try:
        caller = await caller_admitted(request.headers.get("Authorization"))
    except GatewayError as error:
        return error.response()

    def listing() -> list[dict[str, Any]]:
        return [
            {
                "id": served.name,
                "object": "model",
                "created": int(served.version.created_at.timestamp()),
                "owned_by": caller.project.name,
            }
            for served in served_model_names(caller.project)
        ]

    data = await _in_thread(listing)
    return JsonResponse({"object": "list", "data": data}, headers=caller.rate.headers())


# --- POST /v1/chat/completions (plain ASGI) -------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its request was read: nothing to answer."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_secure(scope: Scope) -> bool:
    """Whether the request came over HTTPS, as Django's ``request.is_secure`` decides it
    (the scheme, or SECURE_PROXY_SSL_HEADER set by a trusted proxy)."""
    if scope.get("scheme") == "https":
        return True
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if not proxy:
        return False
    header, secure_value = proxy
    name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
    value = _header(scope, name)
    return value is not None and value.split(",", 1)[0].strip() == secure_value


async def _body(receive: Receive) -> bytes:
    """The request's body, refused with 413 past DATA_UPLOAD_MAX_MEMORY_SIZE as Django
    refuses its own requests' bodies."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise GatewayError(413, "The request is too large.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    if settings.SECURE_HSTS_SECONDS:
        # HSTS as SecurityMiddleware sends it on the site's HTTPS answers.
        policy = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            policy += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            policy += "; preload"
        raw.append((b"strict-transport-security", policy.encode("latin-1")))
    return raw


async def _send_body(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    await send(
        {"type": "http.response.start", "status": status, "headers": _raw_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: dict[str, str]
) -> None:
    await _send_body(send, status, json.dumps(payload).encode(), headers)


async def _send_error(send: Send, error: GatewayError) -> None:
    await _send_json(send, error.status, error.payload(), error.headers)


async def _send_stream(send: Send, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> None:
    stream_headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        **headers,
    }
    await send(
        {"type": "http.response.start", "status": 200, "headers": _raw_headers(stream_headers)}
    )
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _redirect_to_https(scope: Scope, send: Send) -> None:
    """SECURE_SSL_REDIRECT as SecurityMiddleware answers it: 301 to the same path on HTTPS
    (an application key must not travel in the clear)."""
    host = settings.SECURE_SSL_HOST or _header(scope, b"host") or ""
    location = f"https://{host}{scope['path']}"
    await send(
        {
            "type": "http.response.start",
            "status": 301,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions``: one answer from the version the model name serves now.

    A plain ASGI application (``config.asgi`` sends the path here, not to Django): no request
    or response objects, no middleware (an application key is the only authentication: the
    HTTPS redirect and HSTS are applied here), and no thread for what is kept in memory (the
    key, the plan, the backend's chat) or reached over HTTP (``providers.base.AsyncChatModel``).
    bench/gateway.py measures what this saves. A bug is logged and answered with OpenAI's
    500, as Django would have answered it with its own."""
    started: list[bool] = []

    async def tracked(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(True)
        await send(message)

    try:
        await _chat_completion(scope, receive, tracked)
    except Exception:
        logger.exception("gateway: %s %s failed", scope["method"], scope["path"])
        if not started:
            await _send_error(
                send,
                GatewayError(
                    500,
                    "The gateway failed to answer this request.",
                    type="server_error",
                    code="internal_error",
                ),
            )


async def _chat_completion(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] != "POST":
        await _send_error(
            send,
            GatewayError(
                405,
                f"{scope['method']} is not allowed on {scope['path']}; use POST.",
                code="method_not_allowed",
                headers={"Allow": "POST"},
            ),
        )
        return
    if settings.SECURE_SSL_REDIRECT and not _is_secure(scope):
        await _redirect_to_https(scope, send)
        return
    started = time.monotonic()
    request_id = new_request_id()  # the answer's id, the log row's, and what feedback names
    try:
        raw = await _body(receive)
        # Refused keys, rate limits and budgets: nothing served, nothing logged.
        caller = await caller_admitted(_header(scope, b"authorization"))
        _chat_allowed(caller)
    except GatewayError as error:
        await _send_error(send, error)
        return
    except ClientGone:
        return

    chat_request: ChatRequest | None = None
    planned: Planned | None = None

    def record(
        status: int,
        error: str,
        result: ChatResult | None,
        answer: Answer | None = None,
        fallback: FallbackUse | None = None,
    ) -> None:
        routed = planned.routed if planned else None
        served_request_record(
            served=ServedRequest(
                request_id=request_id,
                key=caller.key,
                project=caller.project,
                requested_model=chat_request.model if chat_request else "",
                served_version=answer.version if answer else routed.version if routed else None,
                served_base_model=answer.base_model if answer else None,
                fallback=answer.fallback if answer else fallback,
                messages=chat_request.messages if chat_request else [],
                output=result.text if result else "",
                status_code=status,
                error=error,
                latency_seconds=time.monotonic() - started,
                prompt_tokens=result.prompt_tokens if result else 0,
                completion_tokens=result.completion_tokens if result else 0,
                caller_user=chat_request.user if chat_request else "",
                stream=chat_request.stream if chat_request else False,
                arm_id=routed.arm.arm_id if routed and routed.arm else None,
                arm_name=routed.arm.arm_name if routed and routed.arm else "",
            )
        )

    try:
        chat_request = _chat_request(raw)
        planned = await _planned(caller, chat_request, request_id)
        answer = await _answer(planned, chat_request)
    except GatewayError as error:
        record(error.status, error.message, None, fallback=getattr(error, "fallback", None))
        if planned is not None and chat_request is not None:
            _mirror(caller, planned.routed, chat_request, request_id)
        error.headers.update(caller.rate.headers())
        await _send_error(send, error)
        return
    headers = {**caller.rate.headers(), "x-request-id": request_id}
    _mirror(caller, planned.routed, chat_request, request_id)
    served_name, result = answer.name, answer.result
    if isinstance(result, ChatResult):
        record(200, "", result, answer)
        if chat_request.stream:
            chunks = _chunks(request_id, served_name, result, chat_request)
            await _send_stream(send, chunks, headers)
        else:
            completion = _completion(request_id, served_name, result, chat_request)
            await _send_json(send, 200, completion, headers)
        return
    # Streamed as it arrives; its row is written once it has ended (its latency is the whole
    # answer's, its output what was sent when it broke).
    outcomes: list[LiveOutcome] = []

    def ended(outcome: LiveOutcome) -> None:
        outcomes.append(outcome)
        if outcome.result is not None:
            record(200, "", outcome.result, answer)
        else:
            record(502, outcome.failure, _partial(outcome.partial), answer)

    try:
        live = _live_chunks(request_id, served_name, result, chat_request, ended)
        await _send_stream(send, live, headers)
    finally:
        if not outcomes:  # stopped before its end: the server shutting down
            ended(LiveOutcome(failure="The gateway stopped before the answer ended."))


def _partial(text: str) -> ChatResult:
    """What a broken stream had sent, as the log row's output (no usage was reported)."""
    return ChatResult(
        text=text, prompt_tokens=0, completion_tokens=0, latency_seconds=0.0, attempts=1
    )
