"""Every kind of chat model speaks the one ChatModel.generate_many (issue 14, item 2): answers in
input order, each reported once through on_result in the calling thread, ``before_batch``
before each batch (a local model's batches, a hosted model's one), and a ``before_batch`` that
raises stops the call before anything is generated. The hosted kinds run the real SDKs against
the fake servers; the local one generates with the small model."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.chat_servers import FakeAnthropicServer, FakeOpenAIChatServer
from fakes.chat_servers import fake_anthropic_fixture as fake_anthropic_fixture
from fakes.chat_servers import fake_openai_chat_fixture as fake_openai_chat_fixture
from providers.base import ChatModel, ChatResult, Conversation
from providers.hosted_chat import AnthropicChat, OpenAICompatibleChat
from providers.local.generation import LocalChatModel
from providers.local.weights import ensure_base_model

QUESTIONS: list[Conversation] = [
    [{"role": "user", "content": f"Name a colour, question {index}."}] for index in range(5)
]
BATCH_SIZE = 2
# What each kind is asked to do between before_batch calls: the local model answers
# BATCH_SIZE conversations at a time, a hosted model sends them all as one batch.
BATCHES = {
    "local": [[0, 1], [2, 3], [4]],
    "openai": [[0, 1, 2, 3, 4]],
    "anthropic": [[0, 1, 2, 3, 4]],
}


@pytest.fixture(scope="module")
def local_chat(tmp_path_factory: pytest.TempPathFactory) -> LocalChatModel:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache_dir = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return LocalChatModel(ensure_base_model(cache_dir), device="cpu")


@pytest.fixture(params=list(BATCHES))
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def chat(kind: str, request: pytest.FixtureRequest) -> Iterator[ChatModel]:
    model: ChatModel
    if kind == "local":
        model = request.getfixturevalue("local_chat")
    elif kind == "openai":
        openai_fake: FakeOpenAIChatServer = request.getfixturevalue("fake_openai_chat")
        model = OpenAICompatibleChat(
            api_key=openai_fake.api_key, model="test-model", base_url=openai_fake.base_url
        )
    else:
        anthropic_fake: FakeAnthropicServer = request.getfixturevalue("fake_anthropic")
        model = AnthropicChat(
            api_key=anthropic_fake.api_key, model="test-model", base_url=anthropic_fake.base_url
        )
    try:
        yield model
    finally:
        model.close()


def test_answers_come_back_in_input_order_each_reported_once_after_its_batch_began(
    kind: str, chat: ChatModel
) -> None:
    caller = threading.get_ident()
    events: list[tuple[str, int]] = []
    reported: dict[int, ChatResult] = {}

    def before_batch() -> None:
        assert threading.get_ident() == caller
        events.append(("batch", -1))

    def on_result(index: int, result: ChatResult) -> None:
        assert threading.get_ident() == caller
        assert index not in reported
        reported[index] = result
        events.append(("result", index))

    results = chat.generate_many(
        QUESTIONS,
        max_new_tokens=4,
        batch_size=BATCH_SIZE,
        before_batch=before_batch,
        on_result=on_result,
    )

    assert [reported[index] for index in range(len(QUESTIONS))] == results
    answered_alone = chat.generate_batch(QUESTIONS, max_new_tokens=4)
    assert [result.as_generation() for result in results] == answered_alone
    assert all(result.attempts >= 1 and result.latency_seconds >= 0 for result in results)
    batches: list[list[int]] = []
    for event, index in events:
        if event == "batch":
            batches.append([])
        else:
            batches[-1].append(index)
    assert [sorted(batch) for batch in batches] == BATCHES[kind]


def test_a_before_batch_that_raises_stops_the_call_before_anything_is_generated(
    chat: ChatModel,
) -> None:
    reported: list[int] = []

    def cancelled() -> None:
        raise RuntimeError("the run was cancelled")

    with pytest.raises(RuntimeError, match="the run was cancelled"):
        chat.generate_many(
            QUESTIONS,
            max_new_tokens=4,
            before_batch=cancelled,
            on_result=lambda index, _result: reported.append(index),
        )

    assert reported == []


def test_a_hosted_model_sends_nothing_when_before_batch_stops_it(
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    chat = OpenAICompatibleChat(
        api_key=fake_openai_chat.api_key, model="test-model", base_url=fake_openai_chat.base_url
    )

    def cancelled() -> None:
        raise RuntimeError("the run was cancelled")

    try:
        with pytest.raises(RuntimeError):
            chat.generate_many(QUESTIONS, before_batch=cancelled)
    finally:
        chat.close()
    assert fake_openai_chat.total_requests == 0


def test_a_local_model_stops_between_batches_keeping_what_it_reported(
    local_chat: LocalChatModel,
) -> None:
    reported: list[int] = []
    batches = 0

    def second_batch_cancelled() -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise RuntimeError("the run was cancelled")

    with pytest.raises(RuntimeError, match="the run was cancelled"):
        local_chat.generate_many(
            QUESTIONS,
            max_new_tokens=4,
            batch_size=BATCH_SIZE,
            before_batch=second_batch_cancelled,
            on_result=lambda index, _result: reported.append(index),
        )

    assert reported == [0, 1]
