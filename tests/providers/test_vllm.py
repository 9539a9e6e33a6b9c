"""The vLLM client with the real openai SDK over real HTTP, against the fake vLLM server: adapters
loaded once and only within max_loras, unloaded, asked through generate_many by name, and the
server's errors coming back as the ChatModel's permanent or transient errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fakes.vllm_server import BASE_MODEL, FakeVLLMServer, expected_answer
from fakes.vllm_server import fake_vllm_fixture as fake_vllm_fixture
from providers.base import (
    ChatItemError,
    ChatResult,
    Conversation,
    ProviderError,
    TransientProviderError,
)
from providers.hosted_chat import async_sessions_close
from providers.vllm import AdapterChat, VLLMServer
from tests.threads import on_own_thread

PATH_A = "/artifacts/jobs/1/adapter"
PATH_B = "/artifacts/jobs/2/adapter"


def client(fake: FakeVLLMServer, *, max_loras: int = 4, api_key: str = "unused") -> VLLMServer:
    return VLLMServer(base_url=fake.base_url, api_key=api_key, max_loras=max_loras, timeout=10)


def questions(*texts: str) -> list[Conversation]:
    return [[{"role": "user", "content": text}] for text in texts]


@pytest.fixture
def with_files(fake_vllm: FakeVLLMServer) -> FakeVLLMServer:
    for path in (PATH_A, PATH_B, "/artifacts/jobs/3/adapter"):
        fake_vllm.add_adapter_files(path)
    return fake_vllm


def test_ensuring_an_adapter_loads_it_once_and_the_server_lists_it(
    with_files: FakeVLLMServer,
) -> None:
    server = client(with_files)

    server.ensure_adapter(name="v1", path=PATH_A)
    server.ensure_adapter(name="v1", path=PATH_A)
    server.ensure_adapter(name="v1", path=PATH_A + "/")

    assert with_files.loads == ["v1"]
    served = server.served_models()
    assert served.base_models == (BASE_MODEL,)
    assert dict(served.adapters) == {"v1": PATH_A}


def test_an_adapter_the_server_already_has_is_not_loaded_again_by_a_new_client(
    with_files: FakeVLLMServer,
) -> None:
    client(with_files).ensure_adapter(name="v1", path=PATH_A)

    # A second gateway process (or a restarted one) remembers nothing; it asks the server.
    client(with_files).ensure_adapter(name="v1", path=PATH_A)

    assert with_files.loads == ["v1"]


def test_a_name_the_server_serves_from_another_path_is_refused(
    with_files: FakeVLLMServer,
) -> None:
    server = client(with_files)
    server.ensure_adapter(name="v1", path=PATH_A)

    with pytest.raises(ProviderError, match=r"serves 'v1' from .*jobs/1.*not from .*jobs/2"):
        server.ensure_adapter(name="v1", path=PATH_B)


def test_an_adapter_beyond_max_loras_is_refused_naming_the_limit_and_nothing_is_sent(
    with_files: FakeVLLMServer,
) -> None:
    server = client(with_files, max_loras=2)
    server.ensure_adapter(name="v1", path=PATH_A)
    server.ensure_adapter(name="v2", path=PATH_B)

    with pytest.raises(ProviderError, match=r"max_loras=2.*v1, v2.*'v3'"):
        server.ensure_adapter(name="v3", path="/artifacts/jobs/3/adapter")

    assert with_files.loads == ["v1", "v2"]
    assert with_files.most_adapters_loaded == 2
    # An adapter already there still passes: the limit is on new ones.
    server.ensure_adapter(name="v2", path=PATH_B)


def test_unloading_frees_a_place_and_an_unknown_name_is_nothing_to_do(
    with_files: FakeVLLMServer,
) -> None:
    server = client(with_files, max_loras=1)
    server.ensure_adapter(name="v1", path=PATH_A)

    assert server.unload_adapter("v1") is True
    assert server.unload_adapter("v1") is False
    server.ensure_adapter(name="v2", path=PATH_B)

    assert with_files.unloads == ["v1"]
    assert with_files.loaded_adapters == {"v2": PATH_B}


def test_chats_reach_the_adapter_they_name_and_the_base_model(with_files: FakeVLLMServer) -> None:
    server = client(with_files)
    reported: dict[int, str] = {}

    first = server.adapter_chat_model(name="v1", path=PATH_A)
    second = server.adapter_chat_model(name="v2", path=PATH_B)
    base = server.chat_model(BASE_MODEL)
    answers = first.generate_many(
        questions("alpha", "beta"),
        on_result=lambda index, result: reported.update({index: result.text}),
    )

    assert [answer.text for answer in answers] == [
        expected_answer("v1", "alpha"),
        expected_answer("v1", "beta"),
    ]
    assert reported == {0: expected_answer("v1", "alpha"), 1: expected_answer("v1", "beta")}
    assert second.generate_many(questions("gamma"))[0].text == expected_answer("v2", "gamma")
    assert base.generate_many(questions("delta"))[0].text == expected_answer(BASE_MODEL, "delta")
    assert with_files.answers_by_model == {"v1": 2, "v2": 1, BASE_MODEL: 1}


def test_an_adapter_a_restarted_server_lost_is_loaded_again_and_the_request_answered(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart()

    [answer] = chat.generate_many(questions("alpha"))

    assert answer.text == expected_answer("v1", "alpha")
    assert answer.attempts == 1  # the reload is part of the attempt, not a retry of it
    assert with_files.loads == ["v1", "v1"]
    assert with_files.loaded_adapters == {"v1": PATH_A}
    assert chat.reloads == 1
    assert [call.path for call in with_files.calls][-4:] == [
        "/v1/chat/completions",
        "/v1/models",
        "/v1/load_lora_adapter",
        "/v1/chat/completions",
    ]


def test_a_second_not_found_after_loading_again_fails_for_good_without_a_third_try(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart_before_next_chats(2)

    with pytest.raises(ChatItemError, match=r"`v1` does not exist.*HTTP 404") as failure:
        chat.generate_many(questions("alpha"))

    assert failure.value.retryable is False
    assert with_files.loads == ["v1", "v1"]
    assert sum(call.path == "/v1/chat/completions" for call in with_files.calls) == 2
    assert with_files.answers_by_model == {}


def ask_async(chat: AdapterChat, text: str) -> ChatResult:
    """One answer through answer_async (the gateway's way), on a loop of a thread of its own."""

    async def answer() -> ChatResult:
        try:
            return await chat.answer_async(questions(text)[0], max_new_tokens=16, temperature=0.0)
        finally:
            await async_sessions_close()  # the loop's connections go with the loop

    return on_own_thread(lambda: asyncio.run(answer()))


def test_on_the_event_loop_too_a_lost_adapter_is_loaded_again_and_the_request_answered(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart()

    answer = ask_async(chat, "alpha")

    assert answer.text == expected_answer("v1", "alpha")
    assert answer.attempts == 1
    assert with_files.loads == ["v1", "v1"]
    assert chat.reloads == 1


def test_a_stream_asked_after_a_restart_loads_the_adapter_again_and_is_answered(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart()

    async def streamed() -> tuple[str, ChatResult | None]:
        try:
            live = await chat.stream_async(
                questions("alpha")[0], max_new_tokens=16, temperature=0.0
            )
            text = "".join([piece async for piece in live.pieces()])
            return text, live.result
        finally:
            await async_sessions_close()

    text, result = on_own_thread(lambda: asyncio.run(streamed()))

    # The fake answers whole (no streaming): one piece, the same answer.
    assert text == expected_answer("v1", "alpha")
    assert result is not None and result.text == text
    assert with_files.loads == ["v1", "v1"]
    assert chat.reloads == 1


def test_on_the_event_loop_a_second_not_found_after_loading_again_fails_for_good(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart_before_next_chats(2)

    with pytest.raises(ProviderError, match=r"`v1` does not exist.*HTTP 404") as failure:
        ask_async(chat, "alpha")

    assert not isinstance(failure.value, TransientProviderError)
    assert with_files.loads == ["v1", "v1"]
    assert sum(call.path == "/v1/chat/completions" for call in with_files.calls) == 2


def test_on_the_event_loop_other_not_found_answers_load_nothing(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.fail_next_requests(1, status=404)

    with pytest.raises(ProviderError, match=r"Simulated 404.*HTTP 404"):
        ask_async(chat, "alpha")

    assert with_files.loads == ["v1"]


def test_requests_that_find_the_adapter_gone_together_load_it_once(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart()

    answers = chat.generate_many(questions("a", "b", "c", "d", "e", "f"))

    assert [answer.text for answer in answers] == [
        expected_answer("v1", text) for text in ("a", "b", "c", "d", "e", "f")
    ]
    assert with_files.loads == ["v1", "v1"]


def test_a_reload_the_server_has_no_room_for_fails_naming_the_limit(
    with_files: FakeVLLMServer,
) -> None:
    chat = client(with_files, max_loras=1).adapter_chat_model(name="v1", path=PATH_A)
    with_files.restart()
    client(with_files, max_loras=1).ensure_adapter(name="v2", path=PATH_B)

    with pytest.raises(ChatItemError, match=r"loading adapter 'v1' again.*max_loras=1"):
        chat.generate_many(questions("alpha"))

    assert with_files.loaded_adapters == {"v2": PATH_B}


def test_other_not_found_answers_are_not_taken_for_a_lost_adapter(
    with_files: FakeVLLMServer,
) -> None:
    server = client(with_files)
    adapter_chat = server.adapter_chat_model(name="v1", path=PATH_A)
    with_files.fail_next_requests(1, status=404)

    with pytest.raises(ChatItemError, match=r"Simulated 404.*HTTP 404"):
        adapter_chat.generate_many(questions("alpha"))

    # A plain chat by name never loads anything: it has no adapter path to load from.
    server.unload_adapter("v1")
    with pytest.raises(ChatItemError, match=r"`v1` does not exist.*HTTP 404") as failure:
        server.chat_model("v1").generate_many(questions("alpha"))
    assert failure.value.retryable is False
    assert with_files.loads == ["v1"]


def test_server_errors_in_a_chat_are_retried_as_transient(with_files: FakeVLLMServer) -> None:
    chat = client(with_files).chat_model(BASE_MODEL)
    with_files.fail_next_requests(1, status=503)

    [answer] = chat.generate_many(questions("alpha"))

    assert answer.attempts == 2
    assert answer.text == expected_answer(BASE_MODEL, "alpha")


def test_a_path_without_an_adapter_is_a_permanent_error_naming_it(
    with_files: FakeVLLMServer,
) -> None:
    with pytest.raises(ProviderError, match=r"No adapter found for /nowhere.*HTTP 404") as error:
        client(with_files).ensure_adapter(name="v9", path="/nowhere")

    assert not isinstance(error.value, TransientProviderError)
    assert with_files.loaded_adapters == {}


def test_an_adapter_of_too_high_a_rank_is_refused_by_the_server(
    fake_vllm: FakeVLLMServer,
) -> None:
    fake_vllm.add_adapter_files(PATH_A, rank=64)

    with pytest.raises(ProviderError, match=r"max_lora_rank 16.*HTTP 400"):
        client(fake_vllm).ensure_adapter(name="v1", path=PATH_A)


def test_a_server_error_while_loading_is_transient(with_files: FakeVLLMServer) -> None:
    server = client(with_files)
    with_files.fail_next_requests(1, status=500)

    with pytest.raises(TransientProviderError, match="listing models"):
        server.ensure_adapter(name="v1", path=PATH_A)

    server.ensure_adapter(name="v1", path=PATH_A)
    assert with_files.loads == ["v1"]


def test_a_server_without_runtime_loading_gets_a_hint_how_to_start_it() -> None:
    with FakeVLLMServer(runtime_lora_updating=False) as fake:
        fake.add_adapter_files(PATH_A)
        with pytest.raises(ProviderError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            client(fake).ensure_adapter(name="v1", path=PATH_A)


def test_the_key_is_sent_to_a_server_that_wants_one() -> None:
    with FakeVLLMServer(api_key="sk-vllm") as fake:
        fake.add_adapter_files(PATH_A)
        with pytest.raises(ProviderError, match="HTTP 401"):
            client(fake, api_key="wrong").ensure_adapter(name="v1", path=PATH_A)

        chat = client(fake, api_key="sk-vllm").adapter_chat_model(name="v1", path=PATH_A)

        assert chat.generate_many(questions("alpha"))[0].text == expected_answer("v1", "alpha")


def test_a_name_that_cannot_travel_as_a_model_name_is_refused_before_anything_is_sent(
    fake_vllm: FakeVLLMServer,
) -> None:
    with pytest.raises(ProviderError, match="cannot name a vLLM adapter"):
        client(fake_vllm).ensure_adapter(name="../v1 x", path=PATH_A)

    assert fake_vllm.calls == []


def test_clients_loading_one_adapter_at_once_all_end_with_it_loaded_once(
    with_files: FakeVLLMServer,
) -> None:
    # Gateway processes racing for one adapter: the losers get vLLM's 400 "already loaded",
    # then find it listed, and none of them fails.
    failures: list[BaseException] = []

    def ensure() -> None:
        try:
            client(with_files).ensure_adapter(name="v1", path=PATH_A)
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=ensure) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert with_files.loads == ["v1"]
