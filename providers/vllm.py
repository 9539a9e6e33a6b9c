"""A vLLM server on a GPU host, serving one base model and LoRA adapters loaded at run time.

What vLLM documents, and this client relies on (checked against vLLM's docs and its OpenAI
server): started with ``--enable-lora`` (and ``--max-loras``, ``--max-lora-rank``) and the
environment variable ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, the server offers

    POST /v1/load_lora_adapter    {"lora_name": "...", "lora_path": "<a directory it can read>"}
    POST /v1/unload_lora_adapter  {"lora_name": "..."}

Both answer 200 with a plain-text "Success: ..." line. Loading a name already loaded is a 400
("has already been loaded"), a path with no adapter a 404, an adapter the server cannot take
(a rank over ``--max-lora-rank``, say) a 400; unloading an unknown name is a 404. Without the
variable the two routes do not exist (404). A loaded adapter is listed by ``GET /v1/models``
(its ``parent`` is the base model; the base model's is null) and is asked for as
``model=<lora_name>`` in ``/v1/chat/completions``.

``--max-loras`` is how many adapters one batch may mix on the GPU. vLLM itself accepts more
loads than that and swaps adapters in and out, so requests for the others wait for a slot:
an A/B test whose arms do not fit would measure the swapping, not the models. So this client
refuses to load an adapter beyond ``max_loras`` (ProviderError naming the limit and what is
loaded) rather than evicting one: an adapter in use by a running experiment must never vanish
under it, and which adapters may go is the caller's decision (``unload_adapter``).

Nothing is remembered here: every ``ensure_adapter`` asks the server what it has, so several
gateway processes, or a restarted server, never disagree with this client. Two clients racing
for one adapter both succeed (the loser's "already loaded" is checked against the list); two
loading different adapters at the same moment could together pass ``max_loras``, since vLLM
has no limit to enforce it atomically, so adapters are best loaded from one place (when a route
or an experiment changes), not on every request. The chat itself is
``providers.hosted_chat.OpenAICompatibleChat`` (a ChatModel), pointed at the adapter's name.

A restarted server (vLLM, or the product's local model server, which speaks the same routes)
has forgotten every adapter loaded before and answers a chat for one with 404 "The model `x`
does not exist.". An adapter's chat (:class:`AdapterChat`) takes that one answer as "load it
again": it loads the adapter through ``/v1/load_lora_adapter`` and sends the request once
more. A second 404 after that load, and every other failure, is the error it always was.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import openai

from providers.base import ChatModel, Conversation, ProviderError, TransientProviderError
from providers.hosted_chat import OpenAICompatibleChat
from providers.openai_ft import classify_error

if TYPE_CHECKING:
    # What one request of the chat brings back: the type of the two methods overridden here.
    from providers.hosted_chat import _Answer, _LiveCompletion

# What an adapter may be called: it travels as a model name, so no spaces or slashes.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RUNTIME_UPDATING_HINT = (
    "start the server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
)


@dataclass(frozen=True)
class ServedModels:
    """What ``GET /v1/models`` lists: the base model(s), and each loaded adapter with the
    path it was loaded from ("" when the server did not say)."""

    base_models: tuple[str, ...]
    adapters: Mapping[str, str]


class VLLMServer:
    """A client of one vLLM server: which adapters it serves, loading and unloading them, and
    chat models for an adapter or the base model. ``max_loras`` is the server's
    ``--max-loras`` (vLLM does not report it, so whoever registers the server says it)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        max_loras: int,
        timeout: float = 60.0,
        max_in_flight: int = 8,
    ) -> None:
        if max_loras < 1:
            raise ValueError("max_loras must be at least 1.")
        self.base_url = base_url
        self.max_loras = max_loras
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._api_key = api_key
        # The SDK's own retries are off, as in hosted_chat: the caller owns retries.
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )

    def close(self) -> None:
        self._client.close()

    # -- what the server has ------------------------------------------------------------------

    def served_models(self) -> ServedModels:
        """The server's own list; TransientProviderError when it cannot be reached."""
        try:
            listed = self._client.models.list()
        except openai.OpenAIError as error:
            raise classify_error(f"vLLM at {self.base_url}: listing models", error) from error
        base_models: list[str] = []
        adapters: dict[str, str] = {}
        for model in listed.data:
            extra = model.model_extra or {}
            if extra.get("parent"):
                root = extra.get("root")
                adapters[model.id] = root if isinstance(root, str) else ""
            else:
                base_models.append(model.id)
        return ServedModels(base_models=tuple(base_models), adapters=adapters)

    # -- loading and unloading ----------------------------------------------------------------

    def ensure_adapter(self, *, name: str, path: str) -> None:
        """Make the server serve the adapter in ``path`` (a directory the server can read) as
        ``name``. Idempotent: nothing is sent when the server already lists it from that path,
        and a load that lost a race with another client counts as done once the server lists
        it. ProviderError when the name is taken by another path, when ``max_loras`` adapters
        are loaded already, or when the server refuses the adapter."""
        _check_adapter_name(name)
        served = self.served_models()
        if name in served.adapters:
            self._check_same_path(name, path, served.adapters[name])
            return
        if len(served.adapters) >= self.max_loras:
            loaded = ", ".join(sorted(served.adapters))
            raise ProviderError(
                f"vLLM at {self.base_url} serves at most max_loras={self.max_loras} adapters "
                f"and has {loaded} loaded: cannot load {name!r}. "
                "Unload one, or start the server with a larger --max-loras (and register that "
                "number with the endpoint)."
            )
        try:
            self._post("/load_lora_adapter", {"lora_name": name, "lora_path": path})
        except ProviderError:
            # Another client may have loaded it meanwhile (vLLM answers 400 "already
            # loaded"): what counts is whether the server lists it now.
            now = self.served_models()
            if name not in now.adapters:
                raise
            self._check_same_path(name, path, now.adapters[name])

    def unload_adapter(self, name: str) -> bool:
        """Stop serving ``name``; False when the server did not list it (nothing to do)."""
        if name not in self.served_models().adapters:
            return False
        try:
            self._post("/unload_lora_adapter", {"lora_name": name})
        except ProviderError:
            if name in self.served_models().adapters:
                raise
        return True

    # -- chat ---------------------------------------------------------------------------------

    def chat_model(self, model: str) -> ChatModel:
        """A ChatModel asking the server for ``model``: its base model, or a loaded adapter's
        name (``adapter_chat_model`` loads it first)."""
        return OpenAICompatibleChat(
            api_key=self._api_key,
            model=model,
            base_url=self.base_url,
            timeout=self.timeout,
            max_in_flight=self.max_in_flight,
        )

    def adapter_chat_model(
        self, *, name: str, path: str, max_attempts: int | None = None
    ) -> AdapterChat:
        """The adapter in ``path``, loaded as ``name`` unless the server has it already, and
        loaded again whenever the server answers that it lost it (a restart)."""
        self.ensure_adapter(name=name, path=path)
        attempts = {} if max_attempts is None else {"max_attempts": max_attempts}
        return AdapterChat(
            api_key=self._api_key,
            base_url=self.base_url,
            adapter_name=name,
            adapter_path=path,
            max_loras=self.max_loras,
            timeout=self.timeout,
            max_in_flight=self.max_in_flight,
            **attempts,
        )

    # -- HTTP ---------------------------------------------------------------------------------

    def _post(self, route: str, body: dict[str, str]) -> str:
        doing = f"vLLM at {self.base_url}: {route.strip('/')} {body['lora_name']!r}"
        try:
            # The SDK's documented way to call a route it has no method for; the answer is
            # vLLM's plain-text "Success: ..." line.
            return self._client.post(route, body=body, cast_to=str)
        except openai.NotFoundError as error:
            if _route_missing(error.body):
                raise ProviderError(
                    f"{doing}: the server offers no {route} ({RUNTIME_UPDATING_HINT})."
                ) from error
            raise classify_error(doing, error) from error
        except openai.OpenAIError as error:
            raise classify_error(doing, error) from error

    def _check_same_path(self, name: str, wanted: str, listed: str) -> None:
        if listed and listed.rstrip("/") != wanted.rstrip("/"):
            raise ProviderError(
                f"vLLM at {self.base_url} serves {name!r} from {listed}, not from {wanted}: "
                "two adapters under one name. Unload it first."
            )


class AdapterChat(OpenAICompatibleChat):
    """The chat of one LoRA adapter served as ``adapter_name``, which loads the adapter again
    (from ``adapter_path``, within ``max_loras``) when the server answers that it does not
    have it, and then sends that request once more. ``reloads`` counts the requests that did so
    (one that found the adapter loaded again by another meanwhile included)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        adapter_name: str,
        adapter_path: str,
        max_loras: int,
        timeout: float = 60.0,
        max_in_flight: int = 8,
        max_attempts: int = 6,
    ) -> None:
        super().__init__(
            api_key=api_key,
            model=adapter_name,
            base_url=base_url,
            timeout=timeout,
            max_in_flight=max_in_flight,
            max_attempts=max_attempts,
        )
        self.adapter_path = adapter_path
        self.reloads = 0
        self._base_url = base_url
        self._api_key = api_key
        self._max_loras = max_loras
        # Requests that found the adapter gone together reload it one at a time: the first
        # loads it, the others find it listed and send nothing.
        self._reload_lock = threading.Lock()

    # Every way a request is sent, each attempt: ``_send`` (generate_many, through the SDK),
    # ``_post_async`` (answer_async, the gateway's, through aiohttp) and ``_open_stream``
    # (stream_async, the gateway's streams).

    def _send(self, payload: Conversation, *, max_new_tokens: int, temperature: float) -> _Answer:
        try:
            return super()._send(payload, max_new_tokens=max_new_tokens, temperature=temperature)
        except ProviderError as error:
            if not _adapter_missing(error, self.model):
                raise
        self._reload()
        # Once: a second "does not exist" is raised as it comes (a server that keeps losing
        # the adapter is broken, and looping would hide that).
        return super()._send(payload, max_new_tokens=max_new_tokens, temperature=temperature)

    async def _post_async(self, body: bytes) -> _Answer:
        try:
            return await super()._post_async(body)
        except ProviderError as error:
            if not _adapter_missing(error, self.model):
                raise
        # The load goes through the SDK, off the event loop: it is rare, and other requests
        # on the loop go on meanwhile.
        await asyncio.to_thread(self._reload)
        return await super()._post_async(body)

    async def _open_stream(self, body: bytes, started: float) -> _LiveCompletion:
        try:
            return await super()._open_stream(body, started)
        except ProviderError as error:
            if not _adapter_missing(error, self.model):
                raise
        await asyncio.to_thread(self._reload)
        return await super()._open_stream(body, started)

    def _reload(self) -> None:
        doing = f"loading adapter {self.model!r} again after the server lost it"
        with self._reload_lock:
            # A client for the moment: restarts are rare, and a client kept per chat would
            # cost every chat's build the SDK's setup.
            loader = VLLMServer(
                base_url=self._base_url,
                api_key=self._api_key,
                max_loras=self._max_loras,
                timeout=self.timeout,
            )
            try:
                loader.ensure_adapter(name=self.model, path=self.adapter_path)
            except TransientProviderError as error:
                raise TransientProviderError(
                    f"{doing}: {error}", retry_after=error.retry_after
                ) from error
            except ProviderError as error:
                raise ProviderError(f"{doing}: {error}") from error
            finally:
                loader.close()
            self.reloads += 1


def _adapter_missing(error: ProviderError, name: str) -> bool:
    """Whether ``error`` is the server's 404 for a chat with ``name``: "The model `name` does
    not exist." (vLLM's words, and the local model server's), not a route it lacks (whose
    answer names no model) nor any other 404: the status ``classify_status`` keeps, and the
    name in its message."""
    return error.status_code == 404 and f"`{name}`" in str(error)


def _check_adapter_name(name: str) -> None:
    if not ADAPTER_NAME.match(name):
        raise ProviderError(
            f"{name!r} cannot name a vLLM adapter: use letters, digits and . _ : - "
            "(at most 128, starting with a letter or digit)."
        )


def _route_missing(body: object) -> bool:
    # A route the server lacks gets its web framework's {"detail": "Not Found"}; vLLM's own
    # 404s (no adapter at that path) carry its error envelope instead.
    return isinstance(body, Mapping) and "detail" in body and "message" not in body
