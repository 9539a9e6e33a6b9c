"""Hosted chat adapters with the real openai and anthropic SDKs over real HTTP, against the
fake chat servers. No assertion here is about speed (bench/hosted_eval.py measures that)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fakes.chat_servers import FakeAnthropicServer, FakeOpenAIChatServer, expected_answer
from fakes.chat_servers import fake_anthropic_fixture as fake_anthropic_fixture
from fakes.chat_servers import fake_openai_chat_fixture as fake_openai_chat_fixture
from providers.base import (
    AsyncChatModel,
    ChatItemError,
    ChatResult,
    Conversation,
    ProviderError,
    TransientProviderError,
)
from providers.hosted_chat import (
    AnthropicChat,
    OpenAICompatibleChat,
    anthropic_request,
    async_sessions_close,
)
from tests.threads import on_own_thread

MODEL = "test-model"


def questions(count: int, *, system: str | None = None) -> list[Conversation]:
    conversations: list[Conversation] = []
    for index in range(count):
        conversation: Conversation = [{"role": "user", "content": f"question number {index}"}]
        if system is not None:
            conversation.insert(0, {"role": "system", "content": system})
        conversations.append(conversation)
    return conversations


def openai_chat(fake: FakeOpenAIChatServer, **options: float) -> OpenAICompatibleChat:
    # A small backoff keeps the retry tests to fractions of a second.
    settings: dict[str, float] = {"backoff_seconds": 0.05, **options}
    return OpenAICompatibleChat(
        api_key=fake.api_key,
        model=MODEL,
        base_url=fake.base_url,
        timeout=settings.pop("timeout", 10.0),
        max_in_flight=int(settings.pop("max_in_flight", 8)),
        max_attempts=int(settings.pop("max_attempts", 6)),
        backoff_seconds=settings.pop("backoff_seconds"),
    )


def anthropic_chat(
    fake: FakeAnthropicServer, *, max_in_flight: int = 8, timeout: float = 10.0, api_key: str = ""
) -> AnthropicChat:
    return AnthropicChat(
        api_key=api_key or fake.api_key,
        model=MODEL,
        base_url=fake.base_url,
        timeout=timeout,
        backoff_seconds=0.05,
        max_in_flight=max_in_flight,
    )


# -- OpenAI-compatible -----------------------------------------------------------------------


def test_answers_come_back_in_input_order_with_usage(fake_openai_chat: FakeOpenAIChatServer):
    conversations = questions(12, system="Answer briefly.")

    generations = openai_chat(fake_openai_chat).generate_many(conversations, max_new_tokens=16)

    assert [g.text for g in generations] == [
        expected_answer(f"question number {index}") for index in range(12)
    ]
    # system (2 words) + user (3 words); the answer "ECHO: QUESTION NUMBER n" is 4 words.
    assert {(g.prompt_tokens, g.completion_tokens, g.attempts) for g in generations} == {(5, 4, 1)}
    assert all(g.latency_seconds > 0 for g in generations)
    assert {body["max_tokens"] for body in fake_openai_chat.bodies} == {16}


def test_max_new_tokens_reaches_the_server(fake_openai_chat: FakeOpenAIChatServer):
    [generation] = openai_chat(fake_openai_chat).generate_many(questions(1), max_new_tokens=2)

    assert generation.text == "ECHO: QUESTION"
    assert generation.completion_tokens == 2


def test_never_more_than_max_in_flight_requests_and_reaches_it(
    fake_openai_chat: FakeOpenAIChatServer,
):
    # Answers take long enough that every worker is waiting on one at the same time.
    fake_openai_chat.response_delay = 0.2

    generations = openai_chat(fake_openai_chat, max_in_flight=4).generate_many(questions(16))

    assert len(generations) == 16
    assert fake_openai_chat.max_in_flight_seen == 4
    assert fake_openai_chat.total_requests == 16


def test_rate_limit_retry_waits_at_least_the_retry_after(fake_openai_chat: FakeOpenAIChatServer):
    fake_openai_chat.fail_next_requests(1, status=429, headers={"Retry-After": "1"})

    [generation] = openai_chat(fake_openai_chat).generate_many(questions(1))

    assert generation.attempts == 2
    [first, second] = fake_openai_chat.request_times_by_item["question number 0"]
    assert second - first >= 1.0


def test_retry_after_ms_is_preferred(fake_openai_chat: FakeOpenAIChatServer):
    # retry-after-ms is OpenAI's more precise header: 400 ms, not the 0 s of Retry-After.
    fake_openai_chat.fail_next_requests(
        1, status=429, headers={"Retry-After": "0", "retry-after-ms": "400"}
    )

    openai_chat(fake_openai_chat).generate_many(questions(1))

    [first, second] = fake_openai_chat.request_times_by_item["question number 0"]
    assert second - first >= 0.4


def test_one_rate_limit_pauses_every_worker(fake_openai_chat: FakeOpenAIChatServer):
    fake_openai_chat.fail_next_requests(1, status=429, headers={"retry-after-ms": "500"})
    fake_openai_chat.response_delay = 0.1
    chat = openai_chat(fake_openai_chat, max_in_flight=2)

    chat.generate_many(questions(4))

    # The two workers sent items 0 and 1; the first to arrive got the 429. The other worker,
    # free 0.1 s later, still waited out the pause before sending items 2 and 3.
    times = fake_openai_chat.request_times_by_item
    [rejected_item] = [item for item, moments in times.items() if len(moments) == 2]
    rejected_at = times[rejected_item][0]
    assert all(times[f"question number {i}"][0] - rejected_at >= 0.5 for i in (2, 3))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(fake_openai_chat: FakeOpenAIChatServer, status: int):
    fake_openai_chat.fail_next_requests(2, status=status)

    [generation] = openai_chat(fake_openai_chat).generate_many(questions(1))

    assert generation.text == expected_answer("question number 0")
    assert generation.attempts == 3


def test_a_stalled_request_times_out_and_is_retried(fake_openai_chat: FakeOpenAIChatServer):
    fake_openai_chat.stall_next_requests(1, seconds=3)

    [generation] = openai_chat(fake_openai_chat, timeout=0.3).generate_many(questions(1))

    assert generation.attempts == 2
    assert fake_openai_chat.requests_by_item["question number 0"] == 2
    assert fake_openai_chat.answers_by_item["question number 0"] == 1


def test_every_item_answered_exactly_once_through_429s_and_500s(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.response_delay = 0.02
    fake_openai_chat.fail_next_requests(5, status=429, headers={"retry-after-ms": "100"})
    fake_openai_chat.fail_next_requests(5, status=500)
    conversations = questions(40)

    generations = openai_chat(fake_openai_chat, max_in_flight=8).generate_many(conversations)

    texts = [c[-1]["content"] for c in conversations]
    assert fake_openai_chat.answers_by_item == {text: 1 for text in texts}
    # The 10 failed requests were retried: 50 sent, 10 extra attempts reported.
    assert fake_openai_chat.total_requests == 50
    assert sum(g.attempts for g in generations) == 50
    assert [g.text for g in generations] == [expected_answer(text) for text in texts]


def test_running_out_of_attempts_names_the_item(fake_openai_chat: FakeOpenAIChatServer):
    fake_openai_chat.fail_next_requests(3, status=500)

    with pytest.raises(ChatItemError, match=r"Item 0: gave up after 3 attempts") as raised:
        openai_chat(fake_openai_chat, max_attempts=3).generate_many(questions(1))

    assert raised.value.index == 0 and raised.value.retryable
    assert fake_openai_chat.total_requests == 3


def test_a_permanent_400_raises_naming_the_item_without_retrying(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.reject_items_containing("question number 5")
    seen: list[int] = []

    with pytest.raises(ProviderError, match=r"^Item 5: .*HTTP 400") as raised:
        openai_chat(fake_openai_chat, max_in_flight=2).generate_many(
            questions(8), on_result=lambda index, _: seen.append(index)
        )

    assert isinstance(raised.value, ChatItemError) and raised.value.index == 5
    assert not raised.value.retryable
    assert fake_openai_chat.requests_by_item["question number 5"] == 1
    # Items answered before the failure were still reported, so a resume can skip them.
    assert 5 not in seen
    assert seen and all(fake_openai_chat.answers_by_item[f"question number {i}"] for i in seen)


def test_on_result_is_called_once_per_item(fake_openai_chat: FakeOpenAIChatServer):
    fake_openai_chat.fail_next_requests(2, status=500)
    reported: list[tuple[int, ChatResult]] = []

    generations = openai_chat(fake_openai_chat, max_in_flight=3).generate_many(
        questions(10), on_result=lambda index, generation: reported.append((index, generation))
    )

    assert sorted(index for index, _ in reported) == list(range(10))
    assert all(generations[index] == generation for index, generation in reported)


@pytest.mark.parametrize(("keep_alive", "connections"), [(True, 1), (False, 5)])
def test_the_client_reuses_a_connection_the_server_keeps_alive(
    keep_alive: bool, connections: int
) -> None:
    # The benchmark's fake keeps connections alive, as real providers do; the tests' fake
    # closes each one so that no idle connection thread outlives a test.
    with FakeOpenAIChatServer(keep_alive=keep_alive) as fake:
        chat = openai_chat(fake, max_in_flight=1)
        try:
            answers = chat.generate_many(questions(5))
        finally:
            chat.close()

    assert [answer.text for answer in answers] == [
        expected_answer(f"question number {index}") for index in range(5)
    ]
    assert fake.connections == connections


def test_nothing_to_generate_sends_nothing(fake_openai_chat: FakeOpenAIChatServer):
    assert openai_chat(fake_openai_chat).generate_many([]) == []
    assert fake_openai_chat.total_requests == 0


def test_a_failing_on_result_stops_the_remaining_requests(fake_openai_chat: FakeOpenAIChatServer):
    def on_result(index: int, generation: ChatResult) -> None:
        raise RuntimeError("the database is gone")

    with pytest.raises(RuntimeError, match="the database is gone"):
        openai_chat(fake_openai_chat, max_in_flight=2).generate_many(
            questions(20), on_result=on_result
        )

    # Only what was already sent when the first result came back, not all 20.
    assert fake_openai_chat.total_requests < 20


def test_generate_batch_speaks_the_chat_model_protocol(fake_openai_chat: FakeOpenAIChatServer):
    generations = openai_chat(fake_openai_chat).generate_batch(
        questions(3), max_new_tokens=8, batch_size=2
    )

    assert [g.text for g in generations] == [
        expected_answer(f"question number {i}") for i in range(3)
    ]
    assert generations[0].prompt_tokens == 3 and generations[0].completion_tokens == 4


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_sends_the_system_apart_and_reads_usage(fake_anthropic: FakeAnthropicServer):
    conversations = questions(4, system="Answer briefly.")

    generations = anthropic_chat(fake_anthropic).generate_many(conversations, max_new_tokens=32)

    assert [g.text for g in generations] == [
        expected_answer(f"question number {i}") for i in range(4)
    ]
    assert {(g.prompt_tokens, g.completion_tokens) for g in generations} == {(5, 4)}
    assert all(body["system"] == "Answer briefly." for body in fake_anthropic.bodies)
    assert all([m["role"] for m in body["messages"]] == ["user"] for body in fake_anthropic.bodies)


def test_anthropic_retries_overloaded_and_rate_limited(fake_anthropic: FakeAnthropicServer):
    fake_anthropic.fail_next_requests(1, status=529)
    fake_anthropic.fail_next_requests(1, status=429, headers={"retry-after": "1"})

    [generation] = anthropic_chat(fake_anthropic).generate_many(questions(1))

    assert generation.attempts == 3
    [_, rate_limited, answered] = fake_anthropic.request_times_by_item["question number 0"]
    assert answered - rate_limited >= 1.0


def test_anthropic_in_flight_is_bounded(fake_anthropic: FakeAnthropicServer):
    fake_anthropic.response_delay = 0.2

    anthropic_chat(fake_anthropic, max_in_flight=3).generate_many(questions(12))

    assert fake_anthropic.max_in_flight_seen == 3


def test_anthropic_multi_turn_keeps_the_alternation(fake_anthropic: FakeAnthropicServer):
    conversation: Conversation = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "bye now"},
    ]

    [generation] = anthropic_chat(fake_anthropic).generate_many([conversation])

    assert generation.text == expected_answer("bye now")
    [body] = fake_anthropic.bodies
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_anthropic_refuses_turns_that_do_not_alternate_before_sending(
    fake_anthropic: FakeAnthropicServer,
):
    conversations = questions(2)
    conversations.append(
        [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    )

    with pytest.raises(ChatItemError, match=r"Item 2: message 1 is a second 'user' turn"):
        anthropic_chat(fake_anthropic).generate_many(conversations)

    assert fake_anthropic.total_requests == 0


def test_anthropic_request_joins_system_messages_and_refuses_unknown_roles():
    request = anthropic_request(
        [
            {"role": "system", "content": "Rule one."},
            {"role": "developer", "content": "Rule two."},
            {"role": "user", "content": "hi"},
        ]
    )
    assert request.system == "Rule one.\n\nRule two."
    assert request.messages == [{"role": "user", "content": "hi"}]

    with pytest.raises(ProviderError, match=r"message 1 has role 'tool'"):
        anthropic_request(
            [{"role": "user", "content": "hi"}, {"role": "tool", "content": "result"}]
        )
    with pytest.raises(ProviderError, match="no user or assistant message"):
        anthropic_request([{"role": "system", "content": "alone"}])
    assert anthropic_request([{"role": "user", "content": "hi"}]).system is None


def test_anthropic_timeout_is_retried(fake_anthropic: FakeAnthropicServer):
    fake_anthropic.stall_next_requests(1, seconds=3)

    [generation] = anthropic_chat(fake_anthropic, timeout=0.3).generate_many(questions(1))

    assert generation.attempts == 2
    assert fake_anthropic.answers_by_item["question number 0"] == 1


def test_anthropic_wrong_key_is_permanent(fake_anthropic: FakeAnthropicServer):
    with pytest.raises(ChatItemError, match=r"Item 0: .*authentication_error.*HTTP 401") as raised:
        anthropic_chat(fake_anthropic, api_key="sk-wrong").generate_many(questions(1))

    assert not raised.value.retryable
    assert fake_anthropic.total_requests == 1


def test_a_single_conversation_is_sent_from_the_calling_thread_with_the_same_errors(
    fake_openai_chat: FakeOpenAIChatServer, monkeypatch: pytest.MonkeyPatch
):
    """The gateway's one request per call starts no pool thread; retries and failures read
    as they do for a batch."""
    import threading

    chat = openai_chat(fake_openai_chat)
    senders: list[threading.Thread] = []
    send = chat._send

    def recording_send(*args: object, **kwargs: object) -> object:
        senders.append(threading.current_thread())
        return send(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chat, "_send", recording_send)
    fake_openai_chat.fail_next_requests(1, status=500)
    [result] = chat.generate_many(questions(1))

    assert result.text == expected_answer("question number 0")
    assert result.attempts == 2
    assert senders == [threading.current_thread()] * 2

    fake_openai_chat.reject_items_containing("question number 0")
    with pytest.raises(ChatItemError) as refused:
        chat.generate_many(questions(1))
    assert refused.value.index == 0 and not refused.value.retryable


# -- OpenAI-compatible, one answer on an event loop (the gateway's path) ----------------------


def answer_async(chat: OpenAICompatibleChat, conversation: Conversation) -> ChatResult:
    async def answered() -> ChatResult:
        try:
            return await chat.answer_async(conversation, max_new_tokens=16, temperature=0.0)
        finally:
            await async_sessions_close()

    # On a thread of its own: after a browser test the main thread has Playwright's loop.
    return on_own_thread(lambda: asyncio.run(answered()))


def test_answer_async_gives_the_same_answer_and_usage_as_generate_many(
    fake_openai_chat: FakeOpenAIChatServer,
):
    chat = openai_chat(fake_openai_chat)
    [question] = questions(1, system="Answer briefly.")

    [synchronous] = chat.generate_many([question], max_new_tokens=16)
    on_a_loop = answer_async(chat, question)

    assert isinstance(chat, AsyncChatModel)
    assert on_a_loop.text == synchronous.text == expected_answer("question number 0")
    assert (on_a_loop.prompt_tokens, on_a_loop.completion_tokens) == (
        synchronous.prompt_tokens,
        synchronous.completion_tokens,
    )
    assert on_a_loop.attempts == 1


def test_answer_async_waits_out_a_rate_limit_and_retries_server_errors(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.fail_next_requests(1, status=429, headers={"retry-after-ms": "300"})
    fake_openai_chat.fail_next_requests(1, status=503)
    started = time.monotonic()

    answered = answer_async(openai_chat(fake_openai_chat), questions(1)[0])

    assert answered.attempts == 3
    assert time.monotonic() - started >= 0.3
    assert fake_openai_chat.answers_by_item["question number 0"] == 1


def test_answer_async_gives_up_as_transient_after_its_attempts(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.fail_next_requests(3, status=500)

    with pytest.raises(TransientProviderError, match=r"gave up after 3 attempts.*HTTP 500"):
        answer_async(openai_chat(fake_openai_chat, max_attempts=3), questions(1)[0])
    assert fake_openai_chat.total_requests == 3


def test_answer_async_raises_a_permanent_400_at_once_with_the_providers_words(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.reject_items_containing("question number 0")

    with pytest.raises(ProviderError, match=r"HTTP 400") as raised:
        answer_async(openai_chat(fake_openai_chat), questions(1)[0])
    assert not isinstance(raised.value, TransientProviderError)
    assert fake_openai_chat.total_requests == 1


def test_answer_async_times_out_a_stalled_request_and_retries_it(
    fake_openai_chat: FakeOpenAIChatServer,
):
    fake_openai_chat.stall_next_requests(1, seconds=3)

    answered = answer_async(openai_chat(fake_openai_chat, timeout=0.3), questions(1)[0])

    assert answered.attempts == 2
    assert fake_openai_chat.answers_by_item["question number 0"] == 1


def test_answer_async_names_an_unreachable_server_as_transient() -> None:
    nowhere = OpenAICompatibleChat(
        api_key="k", model=MODEL, base_url="http://127.0.0.1:9/v1", max_attempts=1
    )

    with pytest.raises(TransientProviderError, match="could not reach the provider"):
        answer_async(nowhere, questions(1)[0])
