"""Streaming through the gateway from a backend that streams (an OpenAI-compatible server):
each piece is relayed as the backend sends it, not after the whole answer, with the usage at
the end and the whole answer in the request log; a stream that breaks after its first piece
ends with OpenAI's error object and an error row that keeps what was sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import openai
import pytest
from django.contrib.auth.models import User

from fakes.chat_servers import (
    FakeOpenAIChatServer,
    expected_answer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from serving.models import RequestLog, RequestStatus
from serving.request_log import request_log_flush
from serving.services import application_key_create

from .gateway_server import fake_chat_key, running_gateway  # noqa: F401
from .test_gateway import QUESTION, client, hosted_version, promote

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
MODEL = "Ticket triage/production"


@pytest.fixture
def api(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> Iterator[openai.OpenAI]:
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    key = application_key_create(project=project, user=lead, name="bot").plaintext
    with running_gateway() as origin:
        yield client(origin, key)


def test_each_piece_reaches_the_client_while_the_backend_is_still_answering(
    api: openai.OpenAI, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    gate = fake_openai_chat.stream_gate = threading.Event()
    stream = api.chat.completions.create(
        model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = iter(stream)
    first = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)
    # The backend holds the rest of its answer until the gate opens: this word came through
    # while it was still answering.
    assert not gate.is_set()
    words = expected_answer("where is my invoice").split()
    assert first.choices[0].delta.content == words[0]

    gate.set()
    rest = list(chunks)
    text = first.choices[0].delta.content + "".join(
        chunk.choices[0].delta.content or "" for chunk in rest if chunk.choices
    )
    assert text == " ".join(words)
    [finish] = [chunk for chunk in rest if chunk.choices and chunk.choices[0].finish_reason]
    assert finish.choices[0].finish_reason == "stop"
    usage = rest[-1].usage
    assert usage is not None and usage.completion_tokens == len(words)
    assert first.model == "Ticket triage/triage@1"

    assert request_log_flush(timeout=30)
    row = RequestLog.objects.get(request_id=first.id)
    assert row.status == RequestStatus.OK
    assert row.output == text and row.completion_tokens == len(words)
    assert fake_openai_chat.bodies[-1]["stream"] is True  # asked of the backend as a stream


def test_a_stream_that_breaks_after_its_first_piece_ends_with_an_error_and_an_error_row(
    api: openai.OpenAI, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    fake_openai_chat.break_streams = True
    received: list[str] = []

    with pytest.raises(openai.APIError) as broken:
        for chunk in api.chat.completions.create(model=MODEL, messages=QUESTION, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)

    assert "stopped while answering" in str(broken.value)
    first_word = expected_answer("where is my invoice").split()[0]
    assert received == [first_word]
    assert request_log_flush(timeout=30)
    row = RequestLog.objects.get()
    assert row.status == RequestStatus.ERROR
    assert row.output == first_word and "stopped while answering" in row.error


def test_a_backend_failing_before_its_first_piece_is_an_ordinary_error_status(
    api: openai.OpenAI, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    fake_openai_chat.reject_items_containing("where is my invoice")

    with pytest.raises(openai.APIStatusError) as refused:
        for _ in api.chat.completions.create(model=MODEL, messages=QUESTION, stream=True):
            pass

    assert refused.value.status_code == 502
    assert refused.value.code == "backend_error"
