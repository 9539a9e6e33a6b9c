"""What answers for a model version at the gateway: a ``providers.base.ChatModel`` built by
``catalog.adapters`` (the one builder of chat models), kept per process so that requests do not
build one each.

- a local LoRA version: the embedded local model with the version's adapter, in this process
  (the dynamic-batching model server of issue 15 replaces this later);
- a hosted fine-tuned version (an ``ft:`` id): the fine-tuned model at its base model's
  registered endpoint, with the key this process holds for it.

A kept chat is found by everything that decides what it calls (:func:`backend_key`): the
version, its adapter or hosted id, its base model and that model's endpoint as registered now.
A new version, or an endpoint an admin changed or disabled, so gets a chat built anew (and
refused, for a disabled one); nothing needs invalidating.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from django.conf import settings

from catalog.adapters import fine_tuned_chat_model
from providers.base import ChatModel
from registry.models import ModelVersion

# Versions whose chats are kept: the aliases and pins in use, with room to spare. A dropped
# chat is not closed (a request may still be using it); its connections go with it.
KEPT_BACKENDS = 32

_kept: OrderedDict[Hashable, ChatModel] = OrderedDict()
_kept_lock = threading.Lock()


def backend_key(version: ModelVersion) -> Hashable:
    """Everything that decides what ``version``'s chat calls, as the rows say now."""
    base = version.base_model
    endpoint = base.endpoint
    endpoint_state = (
        None
        if endpoint is None
        else (
            endpoint.pk,
            endpoint.kind,
            endpoint.url,
            endpoint.enabled,
            endpoint.secret_env,
            endpoint.allowed_models,
        )
    )
    return (
        version.pk,
        version.adapter_dir,
        version.fine_tuned_model,
        base.pk,
        base.key,
        base.provider,
        endpoint_state,
    )


def backend_chat_model(version: ModelVersion) -> ChatModel:
    """The chat that answers for ``version``, built once per process and key. ProviderError
    when it cannot be built (an endpoint that may not be used from here, say)."""
    key = backend_key(version)
    with _kept_lock:
        chat = _kept.get(key)
        if chat is not None:
            _kept.move_to_end(key)
            return chat
    # Built outside the lock: building may read files or the network, and others may be
    # served meanwhile; two requests racing to build one keep whichever is stored first.
    built = fine_tuned_chat_model(
        base_model=version.base_model,
        adapter_dir=version.adapter_dir,
        hosted_model_id=version.fine_tuned_model,
        who=f"{version}",
        max_in_flight=1,
        max_attempts=settings.FTPORTAL_GATEWAY_BACKEND_ATTEMPTS,
    )
    with _kept_lock:
        chat = _kept.setdefault(key, built)
        _kept.move_to_end(key)
        while len(_kept) > KEPT_BACKENDS:
            _kept.popitem(last=False)
    return chat


def backends_forget() -> None:
    """Drop every kept chat (tests; an operator's reload)."""
    with _kept_lock:
        _kept.clear()
