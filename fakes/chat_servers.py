"""Fake hosted chat APIs on 127.0.0.1, so the real ``openai`` and ``anthropic`` SDKs run over
real HTTP: OpenAI chat completions and Anthropic Messages.

OpenAI-compatible, ``POST /v1/chat/completions`` with ``Authorization: Bearer <key>``:

    request   {"model": "...", "messages": [{"role": "user", "content": "..."}],
               "max_tokens": 64, "temperature": 0.0}
    response  {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "...",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ECHO: ..."}}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
    error     {"error": {"message": "...", "type": "...", "param": null, "code": "..."}}

Anthropic, ``POST /v1/messages`` with ``x-api-key: <key>`` (or ``Authorization: Bearer <key>``,
as SDK 2.x sends it) and ``anthropic-version``:

    request   {"model": "...", "max_tokens": 64, "system": "...",
               "messages": [{"role": "user", "content": "..."}], "temperature": 0.0}
    response  {"id": "msg_1", "type": "message", "role": "assistant", "model": "...",
               "content": [{"type": "text", "text": "ECHO: ..."}], "stop_reason": "end_turn",
               "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 3}}
    error     {"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}

The Anthropic fake refuses (400) a system role inside ``messages`` and turns that do not
alternate, as the real API does.

Answers are deterministic: ``expected_answer(last user message)``, cut to ``max_tokens`` words.
A test that needs other answers (a scripted judge, say) passes ``answer_with``: a function from
the request's messages to the answer text, also cut to ``max_tokens`` words. It sees one message
list for both APIs: Anthropic's ``system`` comes first, as a system message. Token counts are
whitespace-separated words. An item is known by its last user message, so
tests give each item distinct text.

Counters: ``connections``, ``total_requests``, ``headers_seen`` (each request's headers),
``max_in_flight_seen``, ``requests_by_item``, ``answers_by_item`` (successful answers sent),
``request_times_by_item`` (arrival times, ``time.monotonic()``). Scenario controls:
``fail_next_requests`` (429 with Retry-After, 500, 529 overloaded, a 400, ...),
``stall_next_requests`` (held, then dropped unanswered: longer than the client's timeout),
``reject_items_containing`` (a permanent 400 for matching items), ``fail_model`` (every
request naming that ``model`` answered with an error status until ``fail_model(model, None)``;
one server can then host a failing fine-tuned model beside a working one),
``response_delay`` (seconds before each successful answer), and for OpenAI's ``stream: true``
(server-sent ``chat.completion.chunk`` events, a word each, the usage when asked for)
``stream_gate`` (streams held after their first word until the test sets it) and
``break_streams`` (streams cut off after their first word).

``python -m fakes.chat_servers`` runs the OpenAI-compatible fake in a process of its own,
controlled over HTTP at ``CONTROL_PATH`` (see ``serve_until_stdin_closes``).

Use them as context managers or as the ``fake_openai_chat`` and ``fake_anthropic`` fixtures
(import ``fake_openai_chat_fixture`` / ``fake_anthropic_fixture`` into the test module).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fakes.http import FakeServer, InjectedFailure, JSONHandler, Reply

DEFAULT_API_KEY = "sk-fake-chat-key"
# For a fake run in its own process (``python -m fakes.chat_servers``): GET answers the
# counters, POST {"count": n, "status": s, "headers": {...}} calls fail_next_requests.
CONTROL_PATH = "/_fake/control"
ANSWER_PREFIX = "ECHO: "
# A scripted answer: the request's messages (role/content dicts) in, the answer text out.
AnswerWith = Callable[[list[dict[str, Any]]], str]
# Anthropic's error "type" for each status the fakes inject.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def expected_answer(user_text: str) -> str:
    return ANSWER_PREFIX + user_text.upper()


def word_count(text: str) -> int:
    return len(text.split())


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _FakeChatServer(FakeServer):
    """What both fakes share: the counters and the scenario controls."""

    path = ""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        response_delay: float = 0.0,
        answer_with: AnswerWith | None = None,
        keep_alive: bool = False,
    ) -> None:
        self.api_key = api_key
        self.response_delay = response_delay
        self.answer_with = answer_with
        self.keep_alive = keep_alive
        # Set by a test to hold every streamed answer after its first word until it is set
        # (what the client receives before the backend has finished), or to break every
        # streamed answer there (a backend that died while answering).
        self.stream_gate: threading.Event | None = None
        self.break_streams = False
        self.bodies: list[Any] = []  # every decoded request body, in arrival order
        # Every request's headers (lower-case names), in arrival order: what a client sent,
        # credentials included, so tests can tell which key reached which server.
        self.headers_seen: list[dict[str, str]] = []
        self.connections = 0  # TCP connections accepted
        self.total_requests = 0
        self.max_in_flight_seen = 0
        self.requests_by_item: Counter[str] = Counter()
        self.answers_by_item: Counter[str] = Counter()
        self.request_times_by_item: dict[str, list[float]] = {}
        self._in_flight = 0
        self._rejected_texts: list[str] = []
        self._failing_models: dict[str, int] = {}
        super().__init__(_handler_for(self))

    @property
    def base_url(self) -> str:
        return self.origin

    # -- scenario controls -------------------------------------------------------------------

    def fail_next_requests(
        self, count: int, *, status: int, headers: dict[str, str] | None = None, message: str = ""
    ) -> None:
        """Answer the next ``count`` requests at once with this status (and headers, e.g.
        ``{"Retry-After": "1"}``)."""
        failure = InjectedFailure(status, dict(headers or {}), message or f"Simulated {status}.")
        self._queue_failures(count, failure)

    def stall_next_requests(self, count: int = 1, *, seconds: float) -> None:
        """Hold the next ``count`` requests this long, then close them without an answer."""
        self._queue_stalls(count, seconds)

    def reject_items_containing(self, text: str) -> None:
        """Refuse (400, permanently) every request whose last user message contains ``text``."""
        with self._lock:
            self._rejected_texts.append(text)

    def fail_model(self, model: str, status: int | None) -> None:
        """Answer every request naming ``model`` with ``status`` (None: answer it again)."""
        with self._lock:
            if status is None:
                self._failing_models.pop(model, None)
            else:
                self._failing_models[model] = status

    def requests_for_model(self, model: str) -> int:
        """How many requests named ``model`` (failed ones included)."""
        with self._lock:
            return sum(
                1 for body in self.bodies if isinstance(body, dict) and body.get("model") == model
            )

    @property
    def successful_answers(self) -> int:
        return sum(self.answers_by_item.values())

    def stats(self) -> dict[str, Any]:
        """The counters as JSON, what ``GET /_fake/control`` answers (for a fake in another
        process)."""
        with self._lock:
            return {
                "total_requests": self.total_requests,
                "max_in_flight_seen": self.max_in_flight_seen,
                "requests_by_item": dict(self.requests_by_item),
                "answers_by_item": dict(self.answers_by_item),
            }

    # -- what each API supplies --------------------------------------------------------------

    def _authorised(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def _check(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Raise _Refused for a request the real API would refuse."""

    def _answer(self, body: dict[str, Any], text: str, prompt_words: int) -> Any:
        raise NotImplementedError

    def _answer_text(self, body: dict[str, Any], user_text: str) -> str:
        """The echo of the last user message, or the scripted answer when there is one; either
        cut to ``max_tokens`` words."""
        max_tokens = body.get("max_tokens")
        if self.answer_with is None:
            words = expected_answer(user_text).split()
            return " ".join(words[:max_tokens] if isinstance(max_tokens, int) else words)
        answer = self.answer_with(_messages_with_system(body))
        # A scripted answer within the limit keeps its lines (a judge's verdict is a line).
        words = answer.split()
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            return " ".join(words[:max_tokens])
        return answer

    def _stream_events(self, body: dict[str, Any], text: str, prompt_words: int) -> list[Any]:
        """A ``stream: true`` request's answer as its API streams it (OpenAI's fake only)."""
        raise NotImplementedError

    def _error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    # -- request handling (handler threads) --------------------------------------------------

    def _arrive(self, item: str) -> tuple[InjectedFailure | None, float]:
        with self._lock:
            self.total_requests += 1
            self._in_flight += 1
            self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight)
            self.requests_by_item[item] += 1
            self.request_times_by_item.setdefault(item, []).append(time.monotonic())
            failure = self._failures.popleft() if self._failures else None
            stall = self._stalls.popleft() if self._stalls and failure is None else 0.0
            return failure, stall

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _reply(self, body: Any, headers: dict[str, str]) -> Reply | None:
        """The reply to a decoded request; None to close without answering."""
        item = _last_user_text(body)
        with self._lock:
            self.headers_seen.append(dict(headers))
        failure, stall = self._arrive(item)
        with self._lock:
            model = body.get("model") if isinstance(body, dict) else None
            model_status = self._failing_models.get(str(model))
        if failure is None and model_status is not None:
            failure = InjectedFailure(model_status, {}, f"Simulated {model_status} for this model.")
        try:
            if failure is not None:
                return Reply(
                    failure.status,
                    self._error_body(failure.status, failure.message),
                    failure.headers,
                )
            if stall:
                self._stopping.wait(stall)
                return None
            if not self._authorised(headers):
                return Reply(401, self._error_body(401, "Invalid API key."))
            try:
                self._check(body, headers)
                if any(text in item for text in self._rejected_texts):
                    raise _Refused(400, "This request is refused (simulated, permanent).")
            except _Refused as refused:
                return Reply(refused.status, self._error_body(refused.status, str(refused)))
            if self.response_delay and self._stopping.wait(self.response_delay):
                return None
            prompt_words = sum(
                word_count(message.get("content") or "") for message in body.get("messages", [])
            ) + word_count(body.get("system") or "")
            if body.get("stream"):
                # Held or broken after the role's event and the first word's.
                reply = Reply(
                    200,
                    None,
                    events=self._stream_events(body, item, prompt_words),
                    hold_after=2,
                    gate=self.stream_gate,
                    break_after=2 if self.break_streams else None,
                )
            else:
                reply = Reply(200, self._answer(body, item, prompt_words))
            with self._lock:
                self.answers_by_item[item] += 1
            return reply
        finally:
            self._leave()


def _last_user_text(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def _messages_with_system(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's messages, Anthropic's separate ``system`` first as a system message, so one
    scripted answer serves both APIs."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = body.get("system")
    if isinstance(system, str) and system:
        return [{"role": "system", "content": system}, *messages]
    return messages


class FakeOpenAIChatServer(_FakeChatServer):
    """``base_url`` ends in /v1, as OpenAI's SDK expects."""

    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return super().base_url + "/v1"

    def _authorised(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def _answer(self, body: dict[str, Any], text: str, prompt_words: int) -> Any:
        answer = self._answer_text(body, text)
        return {
            "id": f"chatcmpl-{self.total_requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
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
                "completion_tokens": word_count(answer),
                "total_tokens": prompt_words + word_count(answer),
            },
        }

    def _stream_events(self, body: dict[str, Any], text: str, prompt_words: int) -> list[Any]:
        """The answer as OpenAI streams it: a chunk with the role, one per word (with the
        spaces before it), one with the finish reason, then the usage when it was asked for."""
        answer = self._answer_text(body, text)
        created = int(time.time())

        def chunk(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-{self.total_requests}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model", ""),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        events: list[Any] = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in re.findall(r"\s*\S+", answer)]
        events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {
                    **chunk({}, None),
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_words,
                        "completion_tokens": word_count(answer),
                        "total_tokens": prompt_words + word_count(answer),
                    },
                }
            )
        return events

    def _error_body(self, status: int, message: str) -> Any:
        error_type = "requests" if status == 429 else "server_error" if status >= 500 else ""
        code = "rate_limit_exceeded" if status == 429 else None
        return {
            "error": {
                "message": message,
                "type": error_type or "invalid_request_error",
                "param": None,
                "code": code,
            }
        }


class FakeAnthropicServer(_FakeChatServer):
    """``base_url`` is the host, as Anthropic's SDK appends /v1/messages itself."""

    path = "/v1/messages"

    def _authorised(self, headers: dict[str, str]) -> bool:
        # SDK 1.x sends x-api-key; SDK 2.x sends the key as a Bearer token. Anthropic takes both.
        return (
            headers.get("x-api-key") == self.api_key
            or headers.get("authorization") == f"Bearer {self.api_key}"
        )

    def _check(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        if not headers.get("anthropic-version"):
            raise _Refused(400, "anthropic-version: header is required.")
        if not isinstance(body.get("max_tokens"), int):
            raise _Refused(400, "max_tokens: Field required.")
        previous = None
        for position, message in enumerate(body.get("messages") or []):
            role = message.get("role")
            if role not in ("user", "assistant"):
                raise _Refused(400, f"messages.{position}.role: Input should be 'user' or ...")
            if role == previous:
                raise _Refused(400, "messages: roles must alternate between user and assistant.")
            previous = role

    def _answer(self, body: dict[str, Any], text: str, prompt_words: int) -> Any:
        answer = self._answer_text(body, text)
        return {
            "id": f"msg_{self.total_requests}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_words, "output_tokens": word_count(answer)},
        }

    def _error_body(self, status: int, message: str) -> Any:
        error_type = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": error_type, "message": message}}


def _handler_for(server: _FakeChatServer) -> type[JSONHandler]:
    class Handler(JSONHandler):
        # Headers and body go out in two writes; on a kept-alive connection, Nagle's algorithm
        # would hold the body until the client's delayed ACK of the headers (40 ms).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server.connections += 1

        def do_GET(self) -> None:
            self.close_connection = True
            if self.path == CONTROL_PATH:
                self.send(Reply(200, server.stats()))
            else:
                self.send(Reply(404, server._error_body(404, f"Unknown URL {self.path}.")))

        def do_POST(self) -> None:
            if not server.keep_alive:
                # One request per connection: no idle keep-alive threads outlive a test.
                self.close_connection = True
            raw = self.read_body()
            if self.path == CONTROL_PATH:
                self._control(raw)
                return
            if self.path.split("?")[0] != server.path:
                self.send(Reply(404, server._error_body(404, f"Unknown URL {self.path}.")))
                return
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self.send(Reply(400, server._error_body(400, "The body is not JSON.")))
                return
            with server._lock:
                server.bodies.append(body)
            reply = server._reply(body, self.lower_case_headers())
            if reply is not None:
                self.send(reply)

        def _control(self, raw: bytes) -> None:
            command = json.loads(raw)
            server.fail_next_requests(
                int(command["count"]), status=int(command["status"]), headers=command.get("headers")
            )
            self.send(Reply(200, {"ok": True}))

    return Handler


@pytest.fixture(name="fake_openai_chat")
def fake_openai_chat_fixture() -> Iterator[FakeOpenAIChatServer]:
    with FakeOpenAIChatServer() as fake:
        yield fake


@pytest.fixture(name="fake_anthropic")
def fake_anthropic_fixture() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        yield fake


def serve_until_stdin_closes() -> None:
    """``python -m fakes.chat_servers [response_delay]``: a fake OpenAI-compatible server
    in its own process, so a benchmark's client does not share a GIL with it. Prints the base
    URL on the first line and stops when its standard input closes.

    Connections are kept alive between requests, as real providers keep them (the SDKs pool
    them): a benchmark then measures the client, not a new TCP connection and server thread
    for every request. The connections' threads end with the process."""
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    with FakeOpenAIChatServer(response_delay=delay, keep_alive=True) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    serve_until_stdin_closes()
