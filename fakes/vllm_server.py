"""A fake vLLM OpenAI-compatible server with LoRA enabled, on 127.0.0.1 over real HTTP, speaking
what vLLM documents for serving adapters (see ``providers/vllm.py`` for the sources):

    GET  /v1/models              {"object": "list", "data": [{"id": base, "parent": null, ...},
                                  {"id": lora_name, "root": lora_path, "parent": base, ...}]}
    POST /v1/load_lora_adapter   {"lora_name", "lora_path"} -> 200 text "Success: LoRA adapter
                                  'x' added successfully."; 400 both fields required; 400
                                  already loaded; 404 no adapter at the path; 400 a rank over
                                  max_lora_rank
    POST /v1/unload_lora_adapter {"lora_name"} -> 200 text "Success: LoRA adapter 'x' removed
                                  successfully."; 400 no name; 404 cannot be found
    POST /v1/chat/completions    model = the base model or a loaded adapter, else 404

Without ``runtime_lora_updating`` (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING) the two adapter
routes do not exist: 404 {"detail": "Not Found"}, as vLLM's web framework answers. Errors use
vLLM's envelope {"error": {"message", "type", "param", "code"}}. With an ``api_key`` every
/v1 route wants ``Authorization: Bearer <key>`` (vLLM's --api-key), else 401.

Like vLLM, the fake accepts more loads than ``max_loras`` (vLLM swaps adapters in and out of
its GPU slots); ``most_adapters_loaded`` records the most it held at once, so a test can show
that a client kept within the limit.

Adapters "on disk" are what a test puts there: ``add_adapter_files(path, rank=8)``. Answers are
deterministic and name who answered: ``expected_answer(model, last user message)``.

Record for tests: ``calls`` (method, path, decoded body, in arrival order),
``loads``/``unloads`` (the names, in order), ``answers_by_model``. Scenario control:
``fail_next_requests`` (any route; 500, 503, 429 with Retry-After, ...); ``restart()``, a
server that came back without the adapters loaded before (vLLM keeps none across a restart);
``restart_before_next_chats(count)``, one such restart just before each of the next ``count``
chat requests (a server restarting again and again; ``restarts`` counts them all).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fakes.http import FakeServer, InjectedFailure, JSONHandler, Reply

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MAX_LORAS = 4
DEFAULT_MAX_LORA_RANK = 16


def expected_answer(model: str, user_text: str) -> str:
    return f"[{model}] {user_text.upper()}"


def error_body(status: int, message: str, error_type: str, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    body: Any


class FakeVLLMServer(FakeServer):
    """``base_url`` ends in /v1, as the OpenAI SDK expects."""

    def __init__(
        self,
        *,
        base_model: str = BASE_MODEL,
        max_loras: int = DEFAULT_MAX_LORAS,
        max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
        runtime_lora_updating: bool = True,
        api_key: str = "",
    ) -> None:
        self.base_model = base_model
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.runtime_lora_updating = runtime_lora_updating
        self.api_key = api_key
        self.calls: list[RecordedCall] = []
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.answers_by_model: Counter[str] = Counter()
        self.most_adapters_loaded = 0
        self.restarts = 0
        self._restarts_before_chats = 0
        # lora_name -> lora_path, in load order (vLLM lists them so).
        self._loaded: dict[str, str] = {}
        # path -> rank of the adapters a test put "on disk".
        self._files: dict[str, int] = {}
        super().__init__(_handler_for(self))

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    # -- scenario -----------------------------------------------------------------------------

    def add_adapter_files(self, path: str, *, rank: int = 8) -> None:
        """An adapter directory the server can read at ``path``."""
        with self._lock:
            self._files[path.rstrip("/")] = rank

    def fail_next_requests(
        self, count: int, *, status: int, headers: dict[str, str] | None = None
    ) -> None:
        failure = InjectedFailure(status, dict(headers or {}), f"Simulated {status}.")
        self._queue_failures(count, failure)

    def restart(self) -> None:
        """Come back as a restarted vLLM does: the base model served, no adapter loaded."""
        with self._lock:
            self._restart_locked()

    def restart_before_next_chats(self, count: int) -> None:
        with self._lock:
            self._restarts_before_chats = count

    def _restart_locked(self) -> None:
        self._loaded.clear()
        self.restarts += 1

    @property
    def loaded_adapters(self) -> dict[str, str]:
        with self._lock:
            return dict(self._loaded)

    # -- routes (handler threads) -------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.calls.append(RecordedCall(method, path, body))
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            kind = "ServiceUnavailableError" if failure.status >= 500 else "BadRequestError"
            return Reply(
                failure.status, error_body(failure.status, failure.message, kind), failure.headers
            )
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"error": "Unauthorized"})
        route = (method, path)
        if route == ("GET", "/v1/models"):
            return Reply(200, self._models())
        if route == ("POST", "/v1/chat/completions"):
            return self._chat(body)
        if self.runtime_lora_updating and route == ("POST", "/v1/load_lora_adapter"):
            return self._load(body)
        if self.runtime_lora_updating and route == ("POST", "/v1/unload_lora_adapter"):
            return self._unload(body)
        return Reply(404, {"detail": "Not Found"})

    def _models(self) -> Any:
        created = int(time.time())
        cards = [self._card(self.base_model, root=self.base_model, parent=None, created=created)]
        with self._lock:
            loaded = list(self._loaded.items())
        cards += [
            self._card(name, root=path, parent=self.base_model, created=created)
            for name, path in loaded
        ]
        return {"object": "list", "data": cards}

    @staticmethod
    def _card(model_id: str, *, root: str, parent: str | None, created: int) -> Any:
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": root,
            "parent": parent,
            "permission": [],
        }

    def _load(self, body: Any) -> Reply:
        name, path = _text(body, "lora_name"), _text(body, "lora_path")
        if not name or not path:
            return _refused(400, "Both 'lora_name' and 'lora_path' must be provided.")
        with self._lock:
            if name in self._loaded:
                return _refused(400, f"The lora adapter '{name}' has already been loaded.")
            rank = self._files.get(path.rstrip("/"))
            if rank is None:
                return Reply(
                    404,
                    error_body(404, f"No adapter found for {path}", "NotFoundError"),
                )
            if rank > self.max_lora_rank:
                return Reply(
                    400,
                    error_body(
                        400,
                        f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                        "BadRequestError",
                    ),
                )
            self._loaded[name] = path
            self.loads.append(name)
            self.most_adapters_loaded = max(self.most_adapters_loaded, len(self._loaded))
        return Reply(200, f"Success: LoRA adapter '{name}' added successfully.")

    def _unload(self, body: Any) -> Reply:
        name = _text(body, "lora_name")
        if not name:
            return _refused(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        with self._lock:
            if name not in self._loaded:
                return Reply(
                    404,
                    error_body(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"),
                )
            del self._loaded[name]
            self.unloads.append(name)
        return Reply(200, f"Success: LoRA adapter '{name}' removed successfully.")

    def _chat(self, body: Any) -> Reply:
        model = _text(body, "model")
        with self._lock:
            if self._restarts_before_chats > 0:
                self._restarts_before_chats -= 1
                self._restart_locked()
            known = model == self.base_model or model in self._loaded
        if not known:
            return Reply(
                404,
                error_body(404, f"The model `{model}` does not exist.", "NotFoundError", "model"),
            )
        messages = body.get("messages") if isinstance(body, dict) else None
        user_texts = [
            str(message.get("content") or "")
            for message in messages or []
            if isinstance(message, dict) and message.get("role") == "user"
        ]
        answer = expected_answer(model, user_texts[-1] if user_texts else "")
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int):
            answer = " ".join(answer.split()[:max_tokens])
        prompt_words = sum(len(text.split()) for text in user_texts)
        with self._lock:
            self.answers_by_model[model] += 1
        return Reply(
            200,
            {
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": answer},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_words,
                    "completion_tokens": len(answer.split()),
                    "total_tokens": prompt_words + len(answer.split()),
                },
            },
        )


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _refused(status: int, message: str) -> Reply:
    return Reply(status, error_body(status, message, "InvalidUserInput"))


def _handler_for(server: FakeVLLMServer) -> type[JSONHandler]:
    class Handler(JSONHandler):
        def do_GET(self) -> None:
            self.close_connection = True
            self._answer(server.handle("GET", self.path, None, self.lower_case_headers()))

        def do_POST(self) -> None:
            self.close_connection = True
            raw = self.read_body()
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self._answer(Reply(400, error_body(400, "The body is not JSON.", "BadRequest")))
                return
            path = self.path.split("?")[0]
            self._answer(server.handle("POST", path, body, self.lower_case_headers()))

        def _answer(self, reply: Reply) -> None:
            if not isinstance(reply.body, str):
                self.send(reply)
                return
            # vLLM answers a successful load or unload with a plain-text line, not JSON.
            payload = reply.body.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture(name="fake_vllm")
def fake_vllm_fixture() -> Iterator[FakeVLLMServer]:
    with FakeVLLMServer() as fake:
        yield fake
