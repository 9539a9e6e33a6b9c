"""The local model server's core: one base model, the LoRA adapters of the versions in use, and
dynamic batching of concurrent requests, behind the small part of vLLM's OpenAI-compatible HTTP
API the product already speaks (``providers.vllm``):

    GET  /health                   200 {"status": "ok"}
    GET  /v1/models                the base model, and each adapter with ``parent`` and ``root``
    POST /v1/load_lora_adapter     {"lora_name", "lora_path"}: "Success: ..." (vLLM's answers)
    POST /v1/unload_lora_adapter   {"lora_name"}
    POST /v1/chat/completions      model=<adapter or base name>, messages, max_tokens
                                   (greedy whatever the temperature; n=1; with stream,
                                   the answer as server-sent events once it is decoded:
                                   a batch decodes its rows together, so no piece is
                                   ready before the whole)
    GET  /metrics                  requests, batches and their sizes, and the seconds spent
                                   decoding for each model since the server started (with
                                   the server's instance id, host and hourly rate), as JSON

So the gateway reaches it through the same client as a GPU host's vLLM server, over HTTP, and
the heavy model lives in its own process rather than in every ASGI worker of the gateway.

Batching: a request joins the queue of its (model, max_tokens); one decoding thread takes the
queue whose turn it is (round-robin, so one busy adapter cannot starve another), waits until no
request has joined it for ``window_seconds`` (at most ``MAX_WAIT_WINDOWS`` windows in all) or
until ``max_batch`` are waiting, and decodes them together with
``LocalChatModel.generate_batch`` (the product's greedy decoding loop: shared prefix once, rows
dropped as they stop). Different adapters never share a batch; requests with different
``max_tokens`` neither (one limit per batch). Greedy decoding gives
each row the tokens it would get alone, so batching changes the speed, not the answers.

Adapters: the base model is loaded once; an adapter is merged into a copy of it (as
``LocalChatModel`` does, so it decodes as fast as the base model) when it is loaded, and the
``max_loaded`` most recently used merged copies stay in memory; one evicted is merged again
from its directory at its next request. Only directories under ``adapter_root`` may be loaded:
the server reads what the site's artifact store holds, never a path a caller makes up.

Plain Python and ASGI, no Django: ``providers.local.serve`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from providers.base import Conversation, Generation

from .generation import LocalChatModel
from .loading import load_base_model, load_tokenizer, pick_device

# A request body larger than this is refused (413): a chat request is a few kilobytes.
MAX_BODY_BYTES = 1_000_000
# Requests waiting beyond this are refused with 503 and Retry-After, instead of queueing for
# minutes: the gateway's timeout would end them anyway.
MAX_QUEUED_REQUESTS = 512
# The quiet window that closes a batch. 5 ms split 16 clients' batches 13 + 3 on 2 busy cores
# (the burst of a batch's clients sending again spreads over more than 5 ms there); 25 ms fills
# them (bench/serving_local.py on a busy machine: 3.0x with 5 ms, 4.9x with 25 ms; quieter,
# 5.9x with 25 ms and every batch 16), and costs a lone request 25 ms against the seconds a
# CPU decodes for.
DEFAULT_WINDOW_MS = 25.0
# A batch waits at most this many windows for more requests (see BatchingScheduler).
MAX_WAIT_WINDOWS = 10
# Adapter names travel as model names (the same rule as providers.vllm.ADAPTER_NAME).
MAX_ADAPTER_NAME = 128
ROLES = frozenset({"system", "developer", "user", "assistant"})


class ServerRefusal(Exception):
    """A request the server will not serve, with the HTTP status and OpenAI error type."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param

    @property
    def error_type(self) -> str:
        return {
            400: "BadRequestError",
            404: "NotFoundError",
            413: "BadRequestError",
            503: "ServiceUnavailableError",
        }.get(self.status, "InternalServerError")


class _HeldChatModel(LocalChatModel):
    """``LocalChatModel`` decoding with a model this server holds, instead of loading its own:
    the server decides which merged copies stay in memory."""

    def __init__(
        self,
        base_model_dir: Path,
        adapter_dir: Path | None,
        device: str,
        held: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    ) -> None:
        super().__init__(base_model_dir, adapter_dir, device)
        self._held = held

    def model_and_tokenizer(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return self._held


class AdapterModels:
    """The base model (loaded once, under ``base_name``), the adapters registered by name, and
    the most recently used ``max_loaded`` of them merged and ready. Thread-safe."""

    def __init__(
        self,
        base_model_dir: Path,
        *,
        base_name: str,
        adapter_root: Path,
        max_registered: int = 64,
        max_loaded: int = 4,
        device: str | None = None,
    ) -> None:
        self.base_model_dir = base_model_dir.resolve()
        self.base_name = base_name
        self.adapter_root = adapter_root.resolve()
        self.max_registered = max_registered
        self.max_loaded = max_loaded
        self.device = pick_device(device)
        tokenizer = load_tokenizer(self.base_model_dir)
        tokenizer.padding_side = "left"  # prompts end flush right, as in generation.py
        base = load_base_model(self.base_model_dir, self.device)
        base.eval()
        self._tokenizer = tokenizer
        self._base = _HeldChatModel(self.base_model_dir, None, self.device, (base, tokenizer))
        self._registered: dict[str, Path] = {}
        self._loaded: OrderedDict[str, _HeldChatModel] = OrderedDict()
        self._lock = threading.Lock()
        # Merging reads the base model's weights; one merge at a time keeps memory bounded.
        self._merge_lock = threading.Lock()

    # -- what is served -----------------------------------------------------------------------

    def adapters(self) -> dict[str, Path]:
        with self._lock:
            return dict(self._registered)

    def loaded_count(self) -> int:
        with self._lock:
            return len(self._loaded)

    def knows(self, name: str) -> bool:
        with self._lock:
            return name == self.base_name or name in self._registered

    # -- loading and unloading ----------------------------------------------------------------

    def register(self, name: str, path: str) -> None:
        """Serve the adapter in ``path`` as ``name``, merged now so that a broken adapter is
        refused here rather than at its first request. ServerRefusal as vLLM answers: 400 for
        a name already loaded or a full server, 404 for a path with no adapter."""
        if not name or len(name) > MAX_ADAPTER_NAME or "/" in name or " " in name:
            raise ServerRefusal(400, f"{name!r} cannot name an adapter.", param="lora_name")
        if name == self.base_name:
            raise ServerRefusal(400, f"{name!r} is the base model's name.", param="lora_name")
        directory = Path(path).resolve()
        if not directory.is_relative_to(self.adapter_root):
            raise ServerRefusal(
                404,
                "Only adapters inside the server's adapter root can be loaded.",
                param="lora_path",
            )
        if not (directory / "adapter_config.json").is_file():
            raise ServerRefusal(404, f"No LoRA adapter at {path}.", param="lora_path")
        with self._lock:
            if name in self._registered:
                raise ServerRefusal(
                    400, f"The lora adapter '{name}' has already been loaded.", param="lora_name"
                )
            if len(self._registered) >= self.max_registered:
                raise ServerRefusal(
                    400,
                    f"This server serves at most {self.max_registered} adapters; unload one.",
                    param="lora_name",
                )
        chat = self._merged(directory)
        with self._lock:
            if name in self._registered:  # another request loaded it meanwhile
                raise ServerRefusal(
                    400, f"The lora adapter '{name}' has already been loaded.", param="lora_name"
                )
            self._registered[name] = directory
            self._keep(name, chat)

    def unregister(self, name: str) -> bool:
        with self._lock:
            self._loaded.pop(name, None)
            return self._registered.pop(name, None) is not None

    def chat_for(self, name: str) -> LocalChatModel:
        """The chat that answers for ``name``: the base model, or the adapter merged (again,
        when it was evicted). ServerRefusal 404 for a name not served."""
        if name == self.base_name:
            return self._base
        with self._lock:
            chat = self._loaded.get(name)
            if chat is not None:
                self._loaded.move_to_end(name)
                return chat
            directory = self._registered.get(name)
        if directory is None:
            raise ServerRefusal(404, f"The model `{name}` does not exist.", param="model")
        chat = self._merged(directory)
        with self._lock:
            if name in self._registered:
                self._keep(name, chat)
        return chat

    def _keep(self, name: str, chat: _HeldChatModel) -> None:
        # Under self._lock.
        self._loaded[name] = chat
        self._loaded.move_to_end(name)
        while len(self._loaded) > self.max_loaded:
            self._loaded.popitem(last=False)

    def _merged(self, directory: Path) -> _HeldChatModel:
        base, tokenizer = self._base.model_and_tokenizer()
        with self._merge_lock:
            try:
                # A copy: merging folds the adapter into the weights it is given.
                adapted = PeftModel.from_pretrained(copy.deepcopy(base), directory)
                merged = adapted.merge_and_unload()
            except (OSError, ValueError, RuntimeError, KeyError) as error:
                raise ServerRefusal(
                    400, f"The adapter at {directory} cannot be loaded: {error}", param="lora_path"
                ) from error
        merged.eval()
        return _HeldChatModel(self.base_model_dir, directory, self.device, (merged, tokenizer))


@dataclass
class _Pending:
    conversation: Conversation
    arrived: float
    answer: Future[Generation]


BatchKey = tuple[str, int]  # (model name, max_tokens)


class BatchingScheduler:
    """Collects concurrent requests into batches and decodes them on one thread (see the
    module's docstring). ``window_seconds=0, max_batch=1`` answers one request at a time.

    The window is a quiet gap, not a deadline after the oldest request: while a batch decodes
    (seconds on a CPU) the next requests pile up, and the clients that batch answered send
    their next ones within milliseconds of each other. Counting from the oldest request would
    start the next batch with the few that were waiting and leave the burst that is arriving
    for the batch after (measured: batches of 13 and 3 alternating with 16 clients); waiting
    for a quiet window takes the burst too."""

    def __init__(
        self,
        models: AdapterModels,
        *,
        window_seconds: float = DEFAULT_WINDOW_MS / 1000,
        max_batch: int = 16,
    ) -> None:
        if max_batch < 1 or window_seconds < 0:
            raise ValueError("max_batch must be at least 1 and window_seconds not negative.")
        self.models = models
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        # However steadily requests trickle in, a batch starts this long after its turn came.
        self.max_wait_seconds = MAX_WAIT_WINDOWS * window_seconds
        self._queues: OrderedDict[BatchKey, deque[_Pending]] = OrderedDict()
        self._queued = 0
        self._ready = threading.Condition()
        self._stopping = False
        self._batch_sizes: Counter[int] = Counter()
        self._requests = 0
        self._failed_batches = 0
        self._decoding = 0  # requests in the batch being decoded now
        # Seconds the decoding thread worked for each model (failed batches too): the machine
        # time the ledger prices (costs.local_serving), told apart across restarts by
        # ``instance``, since the counts start again from zero.
        self._busy_seconds: defaultdict[str, float] = defaultdict(float)
        self.instance = uuid.uuid4().hex
        self._thread = threading.Thread(target=self._run, name="model-server-decode", daemon=True)
        self._thread.start()

    def submit(
        self, model: str, conversation: Conversation, max_new_tokens: int
    ) -> Future[Generation]:
        """The future answer of one request. ServerRefusal 404 for a model not served, 503 when
        too many are queued."""
        if not self.models.knows(model):
            raise ServerRefusal(404, f"The model `{model}` does not exist.", param="model")
        pending = _Pending(conversation, time.monotonic(), Future())
        with self._ready:
            if self._stopping:
                raise ServerRefusal(503, "The server is shutting down.")
            if self._queued >= MAX_QUEUED_REQUESTS:
                raise ServerRefusal(503, f"{self._queued} requests are waiting; try again later.")
            self._queues.setdefault((model, max_new_tokens), deque()).append(pending)
            self._queued += 1
            self._ready.notify()
        return pending.answer

    def metrics(self) -> dict[str, Any]:
        with self._ready:
            sizes = dict(sorted(self._batch_sizes.items()))
            return {
                "requests": self._requests,
                "batches": sum(sizes.values()),
                "max_batch_size": max(sizes, default=0),
                "batch_sizes": {str(size): count for size, count in sizes.items()},
                "failed_batches": self._failed_batches,
                "queued": self._queued,
                "decoding": self._decoding,
                "window_ms": self.window_seconds * 1000,
                "max_batch": self.max_batch,
                "adapters_registered": len(self.models.adapters()),
                "adapters_loaded": self.models.loaded_count(),
                "instance": self.instance,
                "host": socket.gethostname(),
                # What an hour of this host costs, where its operator set it (else the
                # reader's own rate applies).
                "usd_per_hour": os.environ.get("FTPORTAL_LOCAL_USD_PER_HOUR") or None,
                "busy_seconds": {
                    name: round(seconds, 6) for name, seconds in sorted(self._busy_seconds.items())
                },
            }

    def close(self) -> None:
        """Stop taking requests; those queued get an error; the decoding thread ends after the
        batch in hand."""
        with self._ready:
            self._stopping = True
            left = [pending for queue in self._queues.values() for pending in queue]
            self._queues.clear()
            self._queued = 0
            self._ready.notify_all()
        for pending in left:
            pending.answer.set_exception(ServerRefusal(503, "The server is shutting down."))
        self._thread.join(timeout=30)

    # -- the decoding thread ------------------------------------------------------------------

    def _next_batch(self) -> tuple[BatchKey, list[_Pending]] | None:
        with self._ready:
            while not self._queues and not self._stopping:
                self._ready.wait()
            if self._stopping:
                return None
            # The queue whose turn it is: queues are kept in the order they were last served.
            key = next(iter(self._queues))
            queue = self._queues[key]
            looking_since = time.monotonic()
            latest = looking_since + self.max_wait_seconds
            while len(queue) < self.max_batch and not self._stopping:
                # The batch closes after a quiet window: none arrived for window_seconds
                # since the last one (or since this thread came free).
                quiet_from = max(queue[-1].arrived, looking_since)
                remaining = min(quiet_from + self.window_seconds, latest) - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            if self._stopping:
                return None
            batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            self._queued -= len(batch)
            self._decoding = len(batch)
            if queue:
                self._queues.move_to_end(key)  # the others' turn first
            else:
                del self._queues[key]
            return key, batch

    def _run(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            (model, max_new_tokens), batch = taken
            started = time.monotonic()
            try:
                chat = self.models.chat_for(model)
                generations = chat.generate_batch(
                    [pending.conversation for pending in batch],
                    max_new_tokens=max_new_tokens,
                    batch_size=len(batch),
                )
            except Exception as error:  # noqa: BLE001 - the thread must outlive a failed batch
                # Whatever failed (an adapter that cannot be merged again, torch running out
                # of memory), the batch's callers get the error and the next batch runs.
                with self._ready:
                    self._failed_batches += 1
                    self._decoding = 0
                    self._busy_seconds[model] += time.monotonic() - started
                for pending in batch:
                    pending.answer.set_exception(error)
                continue
            with self._ready:
                self._busy_seconds[model] += time.monotonic() - started
                self._batch_sizes[len(batch)] += 1
                self._requests += len(batch)
                self._decoding = 0
            for pending, generation in zip(batch, generations, strict=True):
                pending.answer.set_result(generation)


# --- HTTP (ASGI) ---------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(status: int, payload: Any) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


def _error(refusal: ServerRefusal) -> _Reply:
    headers = ((b"retry-after", b"1"),) if refusal.status == 503 else ()
    body = {
        "error": {
            "message": str(refusal),
            "type": refusal.error_type,
            "param": refusal.param,
            "code": refusal.status,
        }
    }
    return _Reply(refusal.status, json.dumps(body).encode(), headers=headers)


class ModelServerApp:
    """The ASGI application: the routes of the module's docstring over a scheduler."""

    def __init__(self, scheduler: BatchingScheduler, *, default_max_tokens: int = 256) -> None:
        self.scheduler = scheduler
        self.models = scheduler.models
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = 4096

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(receive)
            reply = await self._route(scope["method"], scope["path"], body)
        except ServerRefusal as refusal:
            reply = _error(refusal)
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
            *reply.headers,
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.scheduler.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, method: str, path: str, body: bytes) -> _Reply:
        routes: dict[tuple[str, str], Callable[[bytes], Awaitable[_Reply]]] = {
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/load_lora_adapter"): self._load,
            ("POST", "/v1/unload_lora_adapter"): self._unload,
        }
        handler = routes.get((method, path.rstrip("/") or "/"))
        if handler is None:
            # What vLLM's web framework answers for a route it lacks (providers.vllm reads it).
            return _json(404, {"detail": "Not Found"})
        return await handler(body)

    async def _health(self, body: bytes) -> _Reply:
        return _json(200, {"status": "ok"})

    async def _metrics(self, body: bytes) -> _Reply:
        return _json(200, self.scheduler.metrics())

    async def _models(self, body: bytes) -> _Reply:
        created = int(time.time())
        listed = [_model_card(self.models.base_name, created, parent=None, root="")]
        listed += [
            _model_card(name, created, parent=self.models.base_name, root=str(path))
            for name, path in sorted(self.models.adapters().items())
        ]
        return _json(200, {"object": "list", "data": listed})

    async def _load(self, body: bytes) -> _Reply:
        payload = _object(body)
        name = _text(payload, "lora_name")
        path = _text(payload, "lora_path")
        await asyncio.to_thread(self.models.register, name, path)
        return _Reply(
            200, f"Success: LoRA adapter '{name}' added successfully.".encode(), "text/plain"
        )

    async def _unload(self, body: bytes) -> _Reply:
        name = _text(_object(body), "lora_name")
        if not self.models.unregister(name):
            raise ServerRefusal(
                404, f"The lora adapter '{name}' cannot be found.", param="lora_name"
            )
        return _Reply(
            200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), "text/plain"
        )

    async def _chat(self, body: bytes) -> _Reply:
        payload = _object(body)
        model = _text(payload, "model")
        messages = _messages(payload.get("messages"))
        max_tokens = self._max_tokens(payload)
        stream = payload.get("stream") or False
        if not isinstance(stream, bool):
            raise ServerRefusal(400, "stream must be true or false.", param="stream")
        if payload.get("n", 1) != 1:
            raise ServerRefusal(400, "Only one choice (n=1) is offered.", param="n")
        answer = self.scheduler.submit(model, messages, max_tokens)
        try:
            generation = await asyncio.wrap_future(answer)
        except ServerRefusal:
            raise
        except Exception as error:  # noqa: BLE001 - whatever decoding raised, answered as JSON
            raise ServerRefusal(500, f"Generation failed: {error}") from error
        # Stopped by the limit rather than by the end-of-turn token (which it counts).
        finish = "length" if generation.completion_tokens >= max_tokens else "stop"
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        }
        answer_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if stream:
            options = payload.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            return _events(answer_id, created, model, generation.text, finish, usage, with_usage)
        return _json(
            200,
            {
                "id": answer_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": generation.text},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )

    def _max_tokens(self, payload: dict[str, Any]) -> int:
        for field in ("max_completion_tokens", "max_tokens"):
            value = payload.get(field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ServerRefusal(400, f"{field} must be a whole number.", param=field)
            if not 1 <= value <= self.max_tokens_limit:
                raise ServerRefusal(
                    400, f"{field} must be between 1 and {self.max_tokens_limit}.", param=field
                )
            return value
        return self.default_max_tokens


def _events(
    answer_id: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    usage: dict[str, int],
    with_usage: bool,
) -> _Reply:
    """A decoded answer as OpenAI's stream of ``chat.completion.chunk`` events: the role and
    the whole text, the finish reason, the usage when asked for, then ``[DONE]``."""

    def chunk(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    events: list[Any] = [chunk({"role": "assistant", "content": text}, None), chunk({}, finish)]
    if with_usage:
        events.append({**chunk({}, None), "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
    return _Reply(200, "".join(lines).encode(), "text/event-stream")


def _model_card(name: str, created: int, *, parent: str | None, root: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "ftportal",
        "root": root or name,
        "parent": parent,
    }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ServerRefusal(413, f"The request body is over {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        raise ServerRefusal(400, "The request body is not JSON.") from None
    if not isinstance(payload, dict):
        raise ServerRefusal(400, "The request body must be a JSON object.")
    return payload


def _text(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value:
        raise ServerRefusal(400, f"{field} must be a non-empty string.", param=field)
    return value


def _messages(value: object) -> Conversation:
    if not isinstance(value, list) or not value:
        raise ServerRefusal(400, "messages must be a non-empty list.", param="messages")
    conversation: Conversation = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ServerRefusal(400, f"{where} must be an object.", param=where)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ServerRefusal(400, f"{where}.role must be one of {sorted(ROLES)}.", param=where)
        if not isinstance(content, str):
            raise ServerRefusal(400, f"{where}.content must be a string.", param=where)
        conversation.append({"role": str(role), "content": content})
    return conversation
