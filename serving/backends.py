"""What answers for a model version at the gateway: a ``providers.base.ChatModel`` built by
``catalog.adapters`` (the one builder of chat models), kept per process so that requests do not
build one each.

- a local LoRA version: when FTPORTAL_GATEWAY_VLLM_ENDPOINT names a registered vLLM endpoint,
  the adapter loaded on that GPU host as ``version-<id>``; else, when
  FTPORTAL_GATEWAY_LOCAL_SERVER_URL names the local model server (``make run`` starts one),
  the adapter loaded there under the same name, its requests batched with others'; else the
  embedded local model with the version's adapter in this process (tests, a bare gateway);
- a hosted fine-tuned version (an ``ft:`` id): the fine-tuned model at its base model's
  registered endpoint, with the key this process holds for it;
- a catalog base model as it is (:func:`base_model_backend_chat`): a hosted baseline (OpenAI,
  Anthropic, an OpenAI-compatible server) for an experiment's arm or an alias's fallback, or the
  embedded local model without an adapter.

A kept chat is found by everything that decides what it calls (:func:`backend_key`): the
version, its adapter or hosted id, its base model and that model's endpoint as registered now.
A new version, or an endpoint an admin changed or disabled, so gets a chat built anew (and
refused, for a disabled one). A chat that failed is dropped (:func:`backend_forget`), so the
next request builds it again: a vLLM server that restarted gets the adapter loaded again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from django.conf import settings

from catalog.adapters import (
    base_chat_model,
    fine_tuned_chat_model,
    local_server_chat_model,
    served_adapter_chat_model,
)
from catalog.models import BaseModel, Endpoint
from providers.base import (
    AsyncChatModel,
    ChatModel,
    ChatResult,
    Conversation,
    LiveAnswer,
    ProviderError,
)
from registry.models import ModelVersion

# Versions whose chats are kept: the aliases and pins in use, with room to spare. A dropped
# chat is not closed (a request may still be using it); its connections go with it.
KEPT_BACKENDS = 32

_kept: OrderedDict[Hashable, ChatModel] = OrderedDict()
_kept_lock = threading.Lock()
# The keys whose chat is being built, each with the lock its builder holds.
_building: dict[Hashable, threading.Lock] = {}


def _endpoint_state(endpoint: Endpoint | None) -> Hashable:
    if endpoint is None:
        return None
    return (
        endpoint.pk,
        endpoint.kind,
        endpoint.url,
        endpoint.enabled,
        endpoint.secret_env,
        endpoint.allowed_models,
        endpoint.adapter_root,
        endpoint.max_loras,
    )


def _vllm_endpoint(version: ModelVersion) -> Endpoint | None:
    """The registered vLLM endpoint that serves ``version``'s adapter, when the operator named
    one (FTPORTAL_GATEWAY_VLLM_ENDPOINT) and the version is a local adapter; else None."""
    name = str(settings.FTPORTAL_GATEWAY_VLLM_ENDPOINT)
    if not name or version.fine_tuned_model or not version.adapter_dir:
        return None
    return Endpoint.objects.filter(name=name).first()


def vllm_endpoint_serving(version: ModelVersion) -> Endpoint | None:
    """The registered vLLM endpoint the gateway serves ``version``'s adapter on, or None (an
    experiment's start checks its version arms against that server's max_loras)."""
    return _vllm_endpoint(version)


def vllm_adapter_name(version: ModelVersion) -> str:
    """What a vLLM server calls ``version``'s adapter: one name per version, for good."""
    return f"version-{version.pk}"


def backend_key(version: ModelVersion, *, vllm: Endpoint | None = None) -> Hashable:
    """Everything that decides what ``version``'s chat calls, as the rows say now."""
    base = version.base_model
    return (
        version.pk,
        version.adapter_dir,
        version.fine_tuned_model,
        base.pk,
        base.key,
        base.provider,
        _endpoint_state(base.endpoint),
        _endpoint_state(vllm),
    )


def _kept_chat(key: Hashable, build: Callable[[], ChatModel]) -> ChatModel:
    """The chat kept under ``key``, built by ``build`` when there is none.

    Built once, under a lock of its key alone: the requests that arrive meanwhile (all of
    them, when traffic starts) wait for that one build rather than each building its own (50
    hosted clients at once, each loading the CA certificates, held a gateway's first second of
    traffic for several in bench/gateway.py); requests for other keys go on being served.
    """
    with _kept_lock:
        chat = _kept.get(key)
        if chat is not None:
            _kept.move_to_end(key)
            return chat
        building = _building.setdefault(key, threading.Lock())
    with building:
        with _kept_lock:
            chat = _kept.get(key)  # built while this request waited
            if chat is not None:
                return chat
        try:
            built = build()
        finally:
            with _kept_lock:
                # A failed build leaves nothing: the next request tries anew.
                _building.pop(key, None)
        with _kept_lock:
            _kept[key] = built
            _kept.move_to_end(key)
            while len(_kept) > KEPT_BACKENDS:
                _kept.popitem(last=False)
    return built


def backend_chat_model(version: ModelVersion) -> ChatModel:
    """The chat that answers for ``version``, built once per process and key. ProviderError
    when it cannot be built (an endpoint that may not be used from here, say)."""
    vllm = _vllm_endpoint(version)
    local_server = str(settings.FTPORTAL_GATEWAY_LOCAL_SERVER_URL)
    if settings.FTPORTAL_GATEWAY_VLLM_ENDPOINT and vllm is None and not version.fine_tuned_model:
        # Named but not registered (or renamed): refused, never served elsewhere unasked.
        raise ProviderError(
            f"{version}: FTPORTAL_GATEWAY_VLLM_ENDPOINT names no registered endpoint."
        )

    def build() -> ChatModel:
        if vllm is None and local_server and version.adapter_dir:
            return local_server_chat_model(
                base_model=version.base_model,
                adapter_name=vllm_adapter_name(version),
                adapter_dir=version.adapter_dir,
                who=f"{version}",
                max_attempts=settings.FTPORTAL_GATEWAY_BACKEND_ATTEMPTS,
            )
        if vllm is not None:
            return served_adapter_chat_model(
                endpoint=vllm,
                base_model=version.base_model,
                adapter_name=vllm_adapter_name(version),
                adapter_dir=version.adapter_dir,
                who=f"{version}",
                max_in_flight=1,
            )
        return fine_tuned_chat_model(
            base_model=version.base_model,
            adapter_dir=version.adapter_dir,
            hosted_model_id=version.fine_tuned_model,
            who=f"{version}",
            max_in_flight=1,
            max_attempts=settings.FTPORTAL_GATEWAY_BACKEND_ATTEMPTS,
        )

    key = (backend_key(version, vllm=vllm), local_server)
    return _kept_chat(key, build)


def base_model_backend_key(base_model: BaseModel) -> Hashable:
    """Everything that decides what ``base_model``'s own chat calls, as the rows say now."""
    return (
        "base",
        base_model.pk,
        base_model.key,
        base_model.provider,
        base_model.weights_path,
        _endpoint_state(base_model.endpoint),
    )


def base_model_backend_chat(base_model: BaseModel) -> ChatModel:
    """The chat of a catalog base model as it is (a hosted baseline or fallback), kept like a
    version's. ProviderError when it cannot be built."""
    return _kept_chat(
        base_model_backend_key(base_model),
        lambda: base_chat_model(
            base_model=base_model, who=f"base model {base_model.key}", max_in_flight=1
        ),
    )


def backend_answer(
    chat: ChatModel, conversation: Conversation, *, max_tokens: int, temperature: float
) -> ChatResult:
    """One conversation's answer from a kept chat. A chat that fails is dropped (the next
    request builds it again) and its ProviderError raised."""
    try:
        [result] = chat.generate_many(
            [conversation], max_new_tokens=max_tokens, temperature=temperature, batch_size=1
        )
    except ProviderError:
        backend_forget(chat)
        raise
    return result


def backend_forget(chat: ChatModel | AsyncChatModel) -> None:
    """Drop a chat that failed, so that the next request builds its version's chat again."""
    with _kept_lock:
        for key, kept in list(_kept.items()):
            if kept is chat:
                del _kept[key]


def backends_forget() -> None:
    """Drop every kept chat (tests; an operator's reload)."""
    with _kept_lock:
        _kept.clear()


async def backend_answer_async(
    chat: AsyncChatModel,
    conversation: Conversation,
    *,
    max_tokens: int,
    temperature: float,
    stream: bool = False,
) -> ChatResult | LiveAnswer:
    """:func:`backend_answer` on the event loop, for a chat reached over HTTP; with
    ``stream``, the answer as it is generated, returned once its first piece is in."""
    try:
        if stream:
            return await chat.stream_async(
                conversation, max_new_tokens=max_tokens, temperature=temperature
            )
        return await chat.answer_async(
            conversation, max_new_tokens=max_tokens, temperature=temperature
        )
    except ProviderError:
        backend_forget(chat)
        raise
