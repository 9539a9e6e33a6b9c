"""Chat generation through hosted APIs, many requests at once: OpenAI-compatible chat
completions (OpenAI, vLLM, Ollama, ...) and Anthropic Messages.

Concurrency is a thread pool of ``max_in_flight`` workers, each holding at most one request
open, rather than async clients inside ``asyncio.run``: ``on_result`` then runs in the caller's
thread, outside any event loop, so evaluation can save progress with the Django ORM there
(Django refuses ORM calls from inside a running event loop). Waiting on sockets releases the
GIL, so tens of threads cost little next to the provider's latency.

The SDKs' own retries are off (``max_retries=0``): every retry is ours, counted in
``attempts``, with backoff, Retry-After honoured, and a shared pause so that one 429 slows
every worker, not just the one that received it.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import anthropic
import certifi
import openai

from providers.base import (
    AnswerConstraint,
    ChatItemError,
    ChatResult,
    Conversation,
    Generation,
    LiveAnswer,
    OnResult,
    ProviderError,
    TransientProviderError,
)
from providers.openai_ft import (
    TRANSIENT_STATUS_CODES,
    classify_error,
    classify_status,
    retry_after_seconds,
)

Sent = TypeVar("Sent")
# Exponential backoff never waits longer than this between two attempts of one item (a
# provider's Retry-After is honoured whatever its length).
MAX_BACKOFF_SECONDS = 30.0
# Anthropic takes system text apart from the turns, and only these two roles as turns.
ANTHROPIC_SYSTEM_ROLES = frozenset({"system", "developer"})
ANTHROPIC_TURN_ROLES = frozenset({"user", "assistant"})


@dataclass(frozen=True)
class _Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int


class _RateLimitPause:
    """A moment before which no worker sends: a 429's Retry-After applies to the whole
    account, so the other workers would only collect more 429s by sending meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resume_at = 0.0

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def wait(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                remaining = self._resume_at - time.monotonic()
            if remaining <= 0 or stop.wait(remaining):
                return


class _HostedChat:
    """What both providers share: the pool, the retries, the ordering and the callbacks."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_in_flight: int = 8,
        max_attempts: int = 6,
        backoff_seconds: float = 0.5,
    ) -> None:
        if max_in_flight < 1 or max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be at least 1.")
        self.model = model
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        # One client for all threads: the SDKs' clients are safe to share and pool connections.
        # max_retries=0, so every retry is ours and counted.
        self._client = self._connect(api_key=api_key, base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    # -- what each provider supplies -----------------------------------------------------------

    def _connect(self, *, api_key: str, base_url: str | None, timeout: float) -> Any:
        """The provider's SDK client."""
        raise NotImplementedError

    def _prepare(self, conversation: Conversation) -> Any:
        """The request payload for a conversation; ProviderError when it cannot be sent."""
        return conversation

    def _send(self, payload: Any, *, max_new_tokens: int, temperature: float) -> _Answer:
        """One request; TransientProviderError when worth trying again."""
        raise NotImplementedError

    # -- the public API ----------------------------------------------------------------------

    def generate_many(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """The ChatModel protocol: answers in input order. ``on_result(index, generation)``
        runs in the calling thread as each item finishes. On a permanent failure, items not
        yet started are dropped, those already in flight are finished (and reported: they are
        paid for), then ChatItemError naming the first failed item is raised.

        Every conversation is one request, ``max_in_flight`` at a time, so ``batch_size`` does
        not apply and ``before_batch`` runs once, before the first request. Hosted decoding
        cannot be constrained token by token from here, so ``constraint`` is ignored (the
        evaluation offers it for local candidates only)."""
        del batch_size, constraint
        # Every conversation is checked before anything is sent, so a malformed one costs nothing.
        payloads = []
        for index, conversation in enumerate(conversations):
            try:
                payloads.append(self._prepare(conversation))
            except ProviderError as error:
                raise ChatItemError(index, str(error), status_code=error.status_code) from error
        if payloads and before_batch is not None:
            before_batch()
        results: list[ChatResult | None] = [None] * len(payloads)
        stop = threading.Event()
        pause = _RateLimitPause()
        if len(payloads) == 1:
            # One request (each of the gateway's): sent from this thread. A pool would start a
            # thread for it, and a thread's start waits for the GIL, which under load cost
            # more than the request's own work (bench/gateway.py).
            try:
                only = self._generate_one(
                    0,
                    payloads[0],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    pause=pause,
                    stop=stop,
                )
            except ChatItemError:
                raise
            except Exception as unexpected:
                raise _as_item_error(0, unexpected) from unexpected
            if on_result is not None:
                on_result(0, only)
            return [only]
        first_error: ChatItemError | None = None
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="hosted-chat") as pool:
            futures: dict[Future[ChatResult], int] = {
                pool.submit(
                    self._generate_one,
                    index,
                    payload,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    pause=pause,
                    stop=stop,
                ): index
                for index, payload in enumerate(payloads)
            }
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    if future.cancelled():
                        continue
                    failure = future.exception()
                    if failure is None:
                        generation = future.result()
                        results[index] = generation
                        if on_result is not None:
                            on_result(index, generation)
                        continue
                    if first_error is None:
                        first_error = _as_item_error(index, failure)
                        _stop_all(stop, futures)
            except BaseException:
                # on_result failed, or the caller's thread was interrupted (Ctrl-C, a Celery
                # time limit): leaving the pool waits for its queue, so empty it first.
                _stop_all(stop, futures)
                raise
        if first_error is not None:
            raise first_error
        return [_present(result) for result in results]

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
    ) -> list[Generation]:
        """The ChatModel protocol; ``batch_size`` and ``constraint`` do not apply, as in
        generate_many."""
        generations = self.generate_many(
            conversations,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            constraint=constraint,
        )
        return [generation.as_generation() for generation in generations]

    # -- one item ------------------------------------------------------------------------------

    def _generate_one(
        self,
        index: int,
        payload: Any,
        *,
        max_new_tokens: int,
        temperature: float,
        pause: _RateLimitPause,
        stop: threading.Event,
    ) -> ChatResult:
        attempt = 0
        while True:
            attempt += 1
            pause.wait(stop)
            if stop.is_set():
                raise ChatItemError(index, "abandoned after another item failed.")
            started = time.monotonic()
            try:
                answer = self._send(payload, max_new_tokens=max_new_tokens, temperature=temperature)
            except TransientProviderError as error:
                if attempt >= self.max_attempts:
                    raise ChatItemError(
                        index, f"gave up after {attempt} attempts: {error}", retryable=True
                    ) from error
                if error.retry_after is not None:
                    pause.extend(error.retry_after)
                # Sleeping on the stop event lets a failure elsewhere end the wait early.
                stop.wait(self._delay(attempt, error.retry_after))
                continue
            except ProviderError as error:
                raise ChatItemError(index, str(error), status_code=error.status_code) from error
            return ChatResult(
                text=answer.text,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                latency_seconds=time.monotonic() - started,
                attempts=attempt,
            )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: at least the provider's Retry-After, else
        exponential backoff. Up to 10% jitter on top spreads out workers that failed together."""
        if retry_after is not None:
            base = retry_after
        else:
            base = min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2 ** (attempt - 1))
        return base * (1 + random.uniform(0, 0.1))


def _stop_all(stop: threading.Event, futures: Iterable[Future[ChatResult]]) -> None:
    """No new request, no further retry; requests already sent finish."""
    stop.set()
    for future in futures:
        future.cancel()


def _as_item_error(index: int, error: BaseException) -> ChatItemError:
    if isinstance(error, ChatItemError):
        return error
    # A bug or an SDK surprise: still name the item, keep the original as the cause.
    wrapped = ChatItemError(index, f"unexpected {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _present(result: ChatResult | None) -> ChatResult:
    if result is None:  # cannot happen without an error raised first; a guard for mypy
        raise ProviderError("An item finished without an answer.")
    return result


# -- OpenAI-compatible -----------------------------------------------------------------------


class OpenAICompatibleChat(_HostedChat):
    """Chat completions at OpenAI or any server that speaks them (vLLM, Ollama: ``base_url``).

    Sends ``max_tokens``, which OpenAI's chat models, vLLM and Ollama all accept.

    :meth:`answer_async` is the gateway's path: one request on the caller's event loop through
    aiohttp, not the SDK. The same request and the same error classification
    (``providers.openai_ft.classify_status``), for an eighth of the SDK's CPU time
    (bench/gateway.py), which is most of what the gateway adds to a request.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        client: openai.OpenAI = self._client
        # Exactly where the SDK sends, and with its key: its base URL default included.
        self._completions_url = f"{str(client.base_url).rstrip('/')}/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {client.api_key}",
            "Content-Type": "application/json",
        }
        # Before this moment (the event loop's clock) no request is sent: a 429's Retry-After.
        self._resume_at = 0.0

    def _connect(self, *, api_key: str, base_url: str | None, timeout: float) -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def _send(self, payload: Conversation, *, max_new_tokens: int, temperature: float) -> _Answer:
        try:
            client: openai.OpenAI = self._client  # typed here: the base class holds either SDK
            completion = client.chat.completions.create(
                model=self.model,
                messages=payload,  # type: ignore[arg-type]  # plain role/content dicts
                max_tokens=max_new_tokens,
                temperature=temperature,
            )
        except openai.OpenAIError as error:
            raise classify_error(COMPLETING, error) from error
        if not completion.choices:
            raise ProviderError("The provider answered with no choices.")
        usage = completion.usage
        return _Answer(
            text=completion.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    # -- one answer on an event loop -----------------------------------------------------------

    async def answer_async(
        self, conversation: Conversation, *, max_new_tokens: int, temperature: float
    ) -> ChatResult:
        """``providers.base.AsyncChatModel``: the conversation's answer, with this chat's
        attempts, backoff and Retry-After as ``generate_many`` has them."""
        body = self._request_body(conversation, max_new_tokens, temperature, stream=False)
        started = time.monotonic()
        answer, attempts = await self._with_attempts(lambda: self._post_async(body))
        return ChatResult(
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_seconds=time.monotonic() - started,
            attempts=attempts,
        )

    async def stream_async(
        self, conversation: Conversation, *, max_new_tokens: int, temperature: float
    ) -> LiveAnswer:
        """``providers.base.AsyncChatModel``: the answer streamed (``stream: true``, with its
        usage), returned once its first piece has arrived, so that a failure before any text
        is tried again like any other (and a caller can still answer it with an error
        status). A server that answers the request whole (no streaming) gives one piece."""
        body = self._request_body(conversation, max_new_tokens, temperature, stream=True)
        started = time.monotonic()
        live, attempts = await self._with_attempts(lambda: self._open_stream(body, started))
        live.attempts = attempts
        return live

    def _request_body(
        self, conversation: Conversation, max_new_tokens: int, temperature: float, *, stream: bool
    ) -> bytes:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return json.dumps(request).encode()

    async def _with_attempts(self, send: Callable[[], Awaitable[Sent]]) -> tuple[Sent, int]:
        """What ``send`` gives, tried again on transient errors as ``generate_many`` tries
        (backoff, Retry-After shared by this chat's requests), with the attempts it took."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            paused = self._resume_at - loop.time()
            if paused > 0:
                await asyncio.sleep(paused)
            try:
                return await send(), attempt
            except TransientProviderError as error:
                if attempt >= self.max_attempts:
                    raise TransientProviderError(
                        f"gave up after {attempt} attempts: {error}",
                        retry_after=error.retry_after,
                        status_code=error.status_code,
                    ) from error
                if error.retry_after is not None:
                    self._resume_at = max(self._resume_at, loop.time() + error.retry_after)
                await asyncio.sleep(self._delay(attempt, error.retry_after))

    async def _post_async(self, body: bytes) -> _Answer:
        with _transport_errors(TransientProviderError, "could not reach the provider"):
            async with _loop_session().post(
                self._completions_url,
                data=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status, headers = response.status, response.headers
                raw = await response.read()
        answer = _json_or_text(raw)
        if status >= 400:
            raise _status_error(status, answer, headers)
        return _completion_answer(answer)

    async def _open_stream(self, body: bytes, started: float) -> _LiveCompletion:
        with _transport_errors(TransientProviderError, "could not reach the provider"):
            response = await _loop_session().post(
                self._completions_url,
                data=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        live = _LiveCompletion(response, started)
        try:
            if response.status >= 400:
                with _transport_errors(TransientProviderError, "could not reach the provider"):
                    answer = _json_or_text(await response.read())
                raise _status_error(response.status, answer, response.headers)
            await live.first_piece()
        except BaseException:
            response.close()
            raise
        return live


class _LiveCompletion:
    """``providers.base.LiveAnswer`` over a streamed chat completion: the server-sent events
    of an open response, read up to the first piece of text by :meth:`first_piece`."""

    def __init__(self, response: aiohttp.ClientResponse, started: float) -> None:
        self._response = response
        self._started = started
        self._buffered: list[str] = []
        self._texts: list[str] = []
        self._usage: dict[str, Any] = {}
        self._events: AsyncIterator[dict[str, Any]] | None = None
        self._whole: _Answer | None = None
        self.attempts = 1
        self.result: ChatResult | None = None

    async def first_piece(self) -> None:
        """Read until the first text (or the end); TransientProviderError on a failure
        before it, as on a failed request."""
        with _transport_errors(TransientProviderError, "the provider's stream broke"):
            if not self._response.content_type.startswith("text/event-stream"):
                self._whole = _completion_answer(_json_or_text(await self._response.read()))
                self._buffered.append(self._whole.text)
                return
            self._events = _server_sent_events(self._response)
            async for event in self._events:
                piece = self._take(event)
                if piece:
                    self._buffered.append(piece)
                    return

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text as it arrives; ``result`` is set once the last is in.
        ProviderError when the stream breaks after its first piece."""
        try:
            # Not transient any more: pieces were given, so the answer cannot be asked again.
            with _transport_errors(ProviderError, "the provider's stream broke"):
                for piece in self._buffered:
                    yield piece
                if self._events is not None:
                    async for event in self._events:
                        piece = self._take(event)
                        if piece:
                            yield piece
            self.result = self._finished()
        finally:
            self._response.close()

    def _take(self, event: dict[str, Any]) -> str:
        """An event's text (empty for none), keeping its usage when it carries one."""
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            self._texts.append(content)
            return content
        return ""

    def _finished(self) -> ChatResult:
        if self._whole is not None:
            text, prompt, completion = (
                self._whole.text,
                self._whole.prompt_tokens,
                self._whole.completion_tokens,
            )
        else:
            text = "".join(self._texts)
            prompt = int(self._usage.get("prompt_tokens") or 0)
            completion = int(self._usage.get("completion_tokens") or 0)
        return ChatResult(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_seconds=time.monotonic() - self._started,
            attempts=self.attempts,
        )

    def close(self) -> None:
        """Stop reading (the client went away): the connection is dropped, not reused."""
        self._response.close()


async def _server_sent_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an OpenAI-style stream, up to ``[DONE]``; an error event raises."""
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event names
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            return
        event = _json_or_text(data)
        if not isinstance(event, dict):
            raise ProviderError(f"{COMPLETING}: the provider streamed something not JSON.")
        if isinstance(event.get("error"), dict):
            # A failure while generating (the status line said 200 long ago): a server error.
            raise _status_error(500, event, {})
        yield event
    # OpenAI-compatible servers end every stream with [DONE]: one that ends without it broke
    # (the server went away mid-answer), however whole the text may look.
    raise ProviderError(f"{COMPLETING}: the provider's stream ended before its end ([DONE]).")


@contextmanager
def _transport_errors(kind: type[ProviderError], broken: str) -> Iterator[None]:
    """aiohttp's timeouts and connection failures as ``kind``: "did not answer in time", or
    ``broken`` with aiohttp's words."""
    try:
        yield
    except TimeoutError:
        raise kind(f"{COMPLETING}: the provider did not answer in time.") from None
    except aiohttp.ClientError as error:
        raise kind(f"{COMPLETING}: {broken} ({error}).") from error


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _status_error(status: int, answer: Any, headers: Mapping[str, str]) -> ProviderError:
    error_body = answer.get("error", answer) if isinstance(answer, dict) else answer
    return classify_status(COMPLETING, status=status, body=error_body, headers=headers)


# One aiohttp session per event loop, for every chat's requests on it: its connections belong
# to that loop (a test's servers each run a loop of their own), and are pooled per host.
_sessions: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}


def _loop_session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    kept = _sessions.get(id(loop))
    if kept is not None and kept[0] is loop and not kept[1].closed:
        return kept[1]
    session = aiohttp.ClientSession(
        # As many connections as requests in flight: the gateway's callers set its pace.
        connector=aiohttp.TCPConnector(limit=0, ssl=_TLS),
    )
    _sessions[id(loop)] = (loop, session)
    return session


async def async_sessions_close() -> None:
    """Close this event loop's connections to the providers (a server's clean shutdown)."""
    kept = _sessions.pop(id(asyncio.get_running_loop()), None)
    if kept is not None:
        await kept[1].close()


# The CA certificates the SDKs trust (certifi's), for the gateway's own client too.
_TLS = ssl.create_default_context(cafile=certifi.where())
COMPLETING = "generating a chat completion"


def _completion_answer(answer: object) -> _Answer:
    """A chat completion's text and token counts, from its JSON."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError("The provider answered with no choices.")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = answer.get("usage") if isinstance(answer, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return _Answer(
        text=content if isinstance(content, str) else "",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


# -- Anthropic -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnthropicRequest:
    system: str | None
    messages: list[dict[str, str]]


def anthropic_request(conversation: Conversation) -> AnthropicRequest:
    """Split a chat conversation into Anthropic's ``system`` and alternating ``messages``.

    System (and developer) messages are joined into ``system``; user and assistant turns must
    alternate, as Anthropic requires, and any other role is refused, naming the message.
    """
    system_parts: list[str] = []
    messages: list[dict[str, str]] = []
    for position, message in enumerate(conversation):
        role = message.get("role", "")
        content = message.get("content", "")
        if role in ANTHROPIC_SYSTEM_ROLES:
            system_parts.append(content)
        elif role not in ANTHROPIC_TURN_ROLES:
            raise ProviderError(f"message {position} has role {role!r}, which Anthropic lacks.")
        elif messages and messages[-1]["role"] == role:
            raise ProviderError(
                f"message {position} is a second {role!r} turn in a row; Anthropic requires "
                "user and assistant turns to alternate."
            )
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise ProviderError("the conversation has no user or assistant message.")
    return AnthropicRequest(system="\n\n".join(system_parts) or None, messages=messages)


class AnthropicChat(_HostedChat):
    """Claude through the Anthropic Messages API (``base_url`` for a gateway or a fake)."""

    def _connect(
        self, *, api_key: str, base_url: str | None, timeout: float
    ) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )

    def _prepare(self, conversation: Conversation) -> AnthropicRequest:
        return anthropic_request(conversation)

    def _send(
        self, payload: AnthropicRequest, *, max_new_tokens: int, temperature: float
    ) -> _Answer:
        # The Messages API of SDK 2.x takes no temperature (newer Claude models refuse
        # sampling parameters), so it is not sent: the model's own sampling applies.
        del temperature
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": payload.messages,
            "max_tokens": max_new_tokens,
        }
        if payload.system is not None:
            arguments["system"] = payload.system
        try:
            client: anthropic.Anthropic = self._client
            message = client.messages.create(**arguments)
        except anthropic.AnthropicError as error:
            raise classify_anthropic_error("generating a message", error) from error
        text = "".join(block.text for block in message.content if block.type == "text")
        return _Answer(
            text=text,
            prompt_tokens=message.usage.input_tokens,
            completion_tokens=message.usage.output_tokens,
        )


def classify_anthropic_error(doing: str, error: anthropic.AnthropicError) -> ProviderError:
    """The Anthropic SDK's errors, sorted as ``classify_error`` sorts OpenAI's (a different
    SDK, so a different exception tree): 408/409/429, 5xx and 529 (overloaded) are transient."""
    if isinstance(error, anthropic.APITimeoutError):
        return TransientProviderError(f"{doing}: the provider did not answer in time.")
    if isinstance(error, anthropic.APIConnectionError):
        return TransientProviderError(f"{doing}: could not reach the provider ({error}).")
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        message = f"{doing}: {_anthropic_error_text(error.body)} (HTTP {status})"
        if status in TRANSIENT_STATUS_CODES or status >= 500:
            return TransientProviderError(
                message, retry_after=retry_after_seconds(error.response.headers)
            )
        return ProviderError(message)
    return ProviderError(f"{doing}: {error}")


def _anthropic_error_text(body: object) -> str:
    # Anthropic's envelope: {"type": "error", "error": {"type": "...", "message": "..."}}.
    details = body.get("error") if isinstance(body, dict) else None
    if isinstance(details, dict) and isinstance(details.get("message"), str):
        return f"{details['message']} ({details.get('type', 'error')})"
    return "no details given"
