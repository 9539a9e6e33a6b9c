"""Builds the provider adapters: the one place Django code constructs what providers/ offers,
and so the one place a worker's key for an endpoint (read by
``catalog.secrets.endpoint_credentials``, at call time) is handed to an adapter.

Fine-tuners for training; chat models (``providers.base.ChatModel``) for whatever asks a model
something: evaluation's candidates and judges, and the serving gateway's backends
(``serving.backends``: a model version's local adapter, in process or on the local model
server (``local_server_chat_model``), its hosted ``ft:`` model, or its adapter on a
registered vLLM server, ``served_adapter_chat_model``). It
lives in the catalog, below every app that calls a model, because all it reads is catalog
rows (base models, endpoints, where the weights are) and the secrets the catalog guards.

Imports of the providers stay inside the functions so that the web process never loads torch
or the provider SDKs; only the worker that trains or generates pays for them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from django.conf import settings

from providers.base import (
    ChatModel,
    FineTuner,
    HostedFineTuner,
    ProviderError,
    TransientProviderError,
)

from .models import BaseModel, Endpoint, EndpointKind, Provider
from .rules import adapter_root_refusal
from .secrets import endpoint_credentials
from .weights import base_model_dir, kept_probes_dir

# The local model server asks for no key (it listens on this host only); the OpenAI client
# still sends one.
LOCAL_SERVER_KEY = "local"

if TYPE_CHECKING:  # imported inside the functions at run time, as every provider here
    from providers.vllm import VLLMServer


def fine_tuner_for(base_model: BaseModel) -> FineTuner:
    from providers.local.training import LocalLoRAFineTuner

    return LocalLoRAFineTuner(base_model_dir(base_model), kept_probes=kept_probes_dir())


def hosted_fine_tuner_for(base_model: BaseModel) -> HostedFineTuner:
    """The adapter of a hosted provider, calling the base model's registered endpoint with the
    key this worker holds for it (and only there)."""
    if base_model.provider != Provider.OPENAI:
        raise ProviderError(f"No hosted fine-tuning adapter for provider {base_model.provider!r}")
    credentials = endpoint_credentials(
        base_model.endpoint, model=base_model.key, who=base_model.display_name
    )
    from providers.openai_ft import OpenAIFineTuner

    return OpenAIFineTuner(
        api_key=credentials.api_key,
        base_url=credentials.base_url,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
    )


async def hosted_connections_close() -> None:
    """Close the connections this event loop's chats hold to providers over HTTP (the
    gateway's answers on its loop: ``providers.base.AsyncChatModel``), at a clean shutdown."""
    from providers.hosted_chat import async_sessions_close

    await async_sessions_close()


def hosted_chat_modules_import() -> None:
    """Import the hosted chats' modules (the providers' SDKs among them) now, as a server does
    before it starts, not within a first request (``config.asgi``)."""
    import providers.hosted_chat  # noqa: F401
    import providers.vllm  # noqa: F401


def local_chat_model(*, base_model: BaseModel, adapter_dir: str = "") -> ChatModel:
    """A local base model, with the LoRA adapter in ``adapter_dir`` applied when one is named."""
    from providers.local.generation import LocalChatModel

    return LocalChatModel(base_model_dir(base_model), Path(adapter_dir) if adapter_dir else None)


def hosted_chat_model(
    *,
    endpoint: Endpoint | None,
    model: str,
    who: str,
    max_in_flight: int,
    listed_as: str = "",
    max_attempts: int | None = None,
) -> ChatModel:
    """A chat model at a registered endpoint, speaking that endpoint's API, with the key this
    worker holds for it (read by ``endpoint_credentials``, sent only to its URL), at most
    ``max_in_flight`` requests at a time. A fine-tuned model is checked against the endpoint's
    model list as its base model (``listed_as``). ``max_attempts`` caps the tries of one
    request (the provider's default when None; the gateway answers sooner than a batch job).
    ProviderError (starting with ``who``) when the endpoint may not be used from this worker."""
    credentials = endpoint_credentials(endpoint, model=listed_as or model, who=who)
    assert endpoint is not None  # endpoint_credentials refuses a missing one
    from providers.hosted_chat import AnthropicChat, OpenAICompatibleChat

    chat = AnthropicChat if endpoint.kind == EndpointKind.ANTHROPIC else OpenAICompatibleChat
    attempts = {} if max_attempts is None else {"max_attempts": max_attempts}
    return chat(
        api_key=credentials.api_key,
        model=model,
        base_url=credentials.base_url,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
        max_in_flight=max_in_flight,
        **attempts,
    )


def base_chat_model(*, base_model: BaseModel, who: str, max_in_flight: int) -> ChatModel:
    """A catalog base model as it is: local weights, or the hosted model at its endpoint."""
    if base_model.provider == Provider.LOCAL:
        return local_chat_model(base_model=base_model)
    return hosted_chat_model(
        endpoint=base_model.endpoint, model=base_model.key, who=who, max_in_flight=max_in_flight
    )


def fine_tuned_chat_model(
    *,
    base_model: BaseModel,
    adapter_dir: str,
    hosted_model_id: str,
    who: str,
    max_in_flight: int,
    max_attempts: int | None = None,
) -> ChatModel:
    """A model fine-tuned from ``base_model`` (a version or a checkpoint): its local adapter
    when it has one, else the provider's fine-tuned model id at the base model's endpoint
    (``max_attempts`` as for :func:`hosted_chat_model`)."""
    if adapter_dir:
        return local_chat_model(base_model=base_model, adapter_dir=adapter_dir)
    return hosted_chat_model(
        endpoint=base_model.endpoint,
        model=hosted_model_id,
        who=who,
        max_in_flight=max_in_flight,
        listed_as=base_model.key,
        max_attempts=max_attempts,
    )


def local_server_chat_model(
    *,
    base_model: BaseModel,
    adapter_name: str,
    adapter_dir: str,
    who: str,
    max_attempts: int | None = None,
) -> ChatModel:
    """A LoRA adapter of the embedded base model, served as ``adapter_name`` by this site's
    local model server (``providers.local.model_server``, at FTPORTAL_GATEWAY_LOCAL_SERVER_URL):
    loaded there first unless the server lists it already, and only when the server runs
    ``base_model`` (the adapter was fine-tuned from it). The server speaks vLLM's adapter
    routes, so the same client talks to both; it runs on this host and reads the adapter from
    the artifact store itself (it refuses any other directory), and asks for no key.
    TransientProviderError when the server cannot be reached; ProviderError (starting with
    ``who``) when it refuses the adapter."""
    base_url = str(settings.FTPORTAL_GATEWAY_LOCAL_SERVER_URL).rstrip("/") + "/v1"
    from providers.vllm import VLLMServer

    server = VLLMServer(
        base_url=base_url,
        api_key=LOCAL_SERVER_KEY,
        max_loras=settings.FTPORTAL_LOCAL_SERVER_MAX_ADAPTERS,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
        max_in_flight=1,
    )
    try:
        runs = server.served_models().base_models
        if base_model.key not in runs:
            raise ProviderError(
                f"the local model server runs {', '.join(runs) or 'no base model'}, not "
                f"{base_model.key}, the base model of this adapter."
            )
        # Loaded again by the chat itself should the server restart and forget it.
        return server.adapter_chat_model(
            name=adapter_name, path=str(Path(adapter_dir).resolve()), max_attempts=max_attempts
        )
    except TransientProviderError as error:
        raise TransientProviderError(f"{who}: {error}", retry_after=error.retry_after) from error
    except ProviderError as error:
        raise ProviderError(f"{who}: {error}") from error
    finally:
        server.close()


def served_adapter_path(endpoint: Endpoint, adapter_dir: str) -> str:
    """Where the vLLM server of ``endpoint`` reads the adapter this site stored in
    ``adapter_dir``: the same place inside the artifact store (FTPORTAL_ARTIFACTS_DIR, a volume
    both hosts mount), under the endpoint's ``adapter_root``. Only adapters inside the store
    travel; nobody types a path. ProviderError for anything else."""
    store = Path(settings.FTPORTAL_ARTIFACTS_DIR).resolve()
    stored = Path(adapter_dir).resolve() if adapter_dir else store
    if stored == store or not stored.is_relative_to(store):
        raise ProviderError(
            f"endpoint {endpoint.name}: only an adapter inside the artifact store can be "
            "served by vLLM; this one is not."
        )
    return str(PurePosixPath(endpoint.adapter_root, *stored.relative_to(store).parts))


def served_adapter_chat_model(
    *,
    endpoint: Endpoint | None,
    base_model: BaseModel,
    adapter_name: str,
    adapter_dir: str,
    who: str,
    max_in_flight: int,
) -> ChatModel:
    """A LoRA adapter fine-tuned from ``base_model``, served as ``adapter_name`` by the
    registered vLLM server ``endpoint``: loaded there first unless the server lists it already,
    refused (ProviderError naming the limit) when that would pass the endpoint's max_loras.
    The endpoint's model list, when it has one, must name ``base_model``'s key: the base model
    that server runs. ProviderError (starting with ``who``) when the endpoint may not be used
    from this worker or is not a vLLM server."""
    server = _vllm_client(endpoint, model=base_model.key, who=who, max_in_flight=max_in_flight)
    assert endpoint is not None  # _vllm_client refuses a missing one
    try:
        path = served_adapter_path(endpoint, adapter_dir)
        return server.adapter_chat_model(name=adapter_name, path=path)
    except TransientProviderError as error:
        raise TransientProviderError(f"{who}: {error}", retry_after=error.retry_after) from error
    except ProviderError as error:
        raise ProviderError(f"{who}: {error}") from error
    finally:
        # The chat model holds its own connections; the loading client's are done.
        server.close()


def served_adapter_unload(
    *, endpoint: Endpoint | None, base_model: BaseModel, adapter_name: str, who: str
) -> bool:
    """Stop the registered vLLM server ``endpoint`` serving ``adapter_name``, an adapter
    fine-tuned from ``base_model`` (freeing one of its max_loras places); False when it did not
    serve it. ProviderError as for loading."""
    server = _vllm_client(endpoint, model=base_model.key, who=who, max_in_flight=1)
    try:
        return server.unload_adapter(adapter_name)
    except TransientProviderError as error:
        raise TransientProviderError(f"{who}: {error}", retry_after=error.retry_after) from error
    except ProviderError as error:
        raise ProviderError(f"{who}: {error}") from error
    finally:
        server.close()


def _vllm_client(
    endpoint: Endpoint | None, *, model: str, who: str, max_in_flight: int
) -> VLLMServer:
    """A client of the registered vLLM server running base model ``model`` (checked against
    the endpoint's model list), with this worker's key for it and the endpoint's max_loras."""
    credentials = endpoint_credentials(endpoint, model=model, who=who)
    assert endpoint is not None  # endpoint_credentials refuses a missing one
    if endpoint.kind != EndpointKind.VLLM:
        raise ProviderError(f"{who}: endpoint {endpoint.name} is not a vLLM server.")
    refusal = adapter_root_refusal(endpoint.adapter_root)
    if refusal:
        raise ProviderError(f"{who}: endpoint {endpoint.name}: {refusal}")
    from providers.vllm import VLLMServer

    return VLLMServer(
        base_url=credentials.base_url,
        api_key=credentials.api_key,
        max_loras=endpoint.max_loras,
        timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS,
        max_in_flight=max_in_flight,
    )
