"""The OpenAI-compatible gateway, called with the official ``openai`` client through a real
uvicorn server: plain and streamed answers with their usage, the model list, promotions and
rollbacks served from the next request, and each refusal with OpenAI's status and error shape.
The backends are hosted fine-tuned versions (``ft:`` ids) at a fake OpenAI-compatible server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from openai.types.chat import ChatCompletionMessageParam

from catalog.models import BaseModel, Provider
from fakes.chat_servers import (
    FakeOpenAIChatServer,
    expected_answer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from registry.models import ModelVersion
from registry.selectors import production_version
from registry.services import model_version_promote, model_version_register, production_rollback
from serving.models import RequestLog, RequestStatus
from serving.request_log import request_log_flush
from serving.services import application_key_create
from serving.traffic import ServedRequest
from tests.factories import (
    fake_endpoint,
    finished_evaluation,
    frozen_version,
    production_number,
    rollback_number,
)
from training.models import JobStatus, TrainingJob

from .gateway_server import FAKE_CHAT_KEY_ENV, fake_chat_key, running_gateway  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
KEY_ENV = FAKE_CHAT_KEY_ENV
BASE = "gpt-4o-mini-2024-07-18"
ALL_RIGHT = [1.0] * 10
ALL_WRONG = [0.0] * 10


@pytest.fixture
def gateway() -> Iterator[str]:
    with running_gateway() as origin:
        yield origin


def hosted_base(fake: FakeOpenAIChatServer) -> BaseModel:
    base, _ = BaseModel.objects.update_or_create(
        key=BASE,
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": fake_endpoint(fake.base_url, secret_env=KEY_ENV),
            "deprecated_at": None,
            "retires_at": None,
            "is_active": True,
        },
    )
    return base


def hosted_version(
    project: Project, lead: User, fake: FakeOpenAIChatServer, *, model_name: str = "triage"
) -> ModelVersion:
    """A finished hosted job's version, as the worker registers it: an ``ft:`` id of its own."""
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=hosted_base(fake),
        provider=Provider.OPENAI,
        hyperparameters={"epochs": 1},
        model_name=model_name,
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    return model_version_register(
        job=job, checkpoint=None, fine_tuned_model=f"ft:{BASE}:triage:job{job.pk}"
    )


def promote(version: ModelVersion, lead: User) -> None:
    """Promote after an evaluation in which the version beat what production serves."""
    model = version.registered_model
    finished_evaluation(
        version=version,
        against=production_version(model),
        scores=ALL_RIGHT,
        baseline_scores=ALL_WRONG,
        user=lead,
    )
    model_version_promote(
        model_version=version,
        expected_current_version=production_number(model),
        user=lead,
        reason="better on the held-out split",
    )


def client(origin: str, api_key: str) -> openai.OpenAI:
    # No retries: each call is one request, so a refusal is seen as it is.
    return openai.OpenAI(base_url=f"{origin}/v1", api_key=api_key, max_retries=0, timeout=30)


def app_key(
    project: Project,
    lead: User,
    *,
    rate_limit_per_minute: int | None = None,
    name: str = "support bot",
) -> str:
    created = application_key_create(
        project=project, user=lead, name=name, rate_limit_per_minute=rate_limit_per_minute
    )
    return created.plaintext


QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "where is my invoice"}]
FORBIDDEN: list[ChatCompletionMessageParam] = [{"role": "user", "content": "a forbidden question"}]


def test_a_promoted_model_answers_the_openai_client_plainly_and_streamed(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = hosted_version(project, lead, fake_openai_chat)
    promote(version, lead)
    api = client(gateway, app_key(project, lead))

    completion = api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, max_tokens=20, user="customer-7"
    )

    assert completion.choices[0].message.content == expected_answer("where is my invoice")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "Ticket triage/triage@1"  # the version that answered
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5
    assert fake_openai_chat.bodies[-1]["model"] == version.fine_tuned_model

    chunks = list(
        api.chat.completions.create(
            model="Ticket triage/triage/production",
            messages=QUESTION,
            max_completion_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_answer("where is my invoice")
    assert len([c for c in chunks if c.choices]) > 3  # a word at a time, not one lump
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    plain_stream = list(
        api.chat.completions.create(model="Ticket triage/triage@1", messages=QUESTION, stream=True)
    )
    assert all(c.usage is None for c in plain_stream)  # no usage unless asked for


def test_the_model_list_names_each_alias_and_each_version_of_the_keys_project(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    first = hosted_version(project, lead, fake_openai_chat)
    hosted_version(project, lead, fake_openai_chat)
    promote(first, lead)
    other = Project.objects.create(name="R&D / EU@2")
    promote(hosted_version(other, lead, fake_openai_chat, model_name="hidden"), lead)

    listed = client(gateway, app_key(project, lead)).models.list()

    assert [m.id for m in listed.data] == [
        "Ticket triage/production",
        "Ticket triage/triage/production",
        "Ticket triage/triage@2",
        "Ticket triage/triage@1",
    ]
    assert {m.owned_by for m in listed.data} == {"Ticket triage"}
    # Odd characters in a name: the syntax's own are percent-encoded, and the names work.
    odd = hosted_version(other, lead, fake_openai_chat, model_name="a/b@c")
    promote(odd, lead)
    other_api = client(gateway, app_key(other, lead))
    odd_names = [m.id for m in other_api.models.list().data]
    assert "R&D %2F EU%402/a%2Fb%40c/production" in odd_names
    assert "R&D %2F EU%402/production" not in odd_names  # two models have a production alias
    answer = other_api.chat.completions.create(
        model="R&D %2F EU%402/a%2Fb%40c@1", messages=QUESTION
    )
    assert answer.model == "R&D %2F EU%402/a%2Fb%40c@1"
    with pytest.raises(openai.NotFoundError) as ambiguous:
        other_api.chat.completions.create(model="R&D %2F EU%402/production", messages=QUESTION)
    assert "a%2Fb%40c" not in ambiguous.value.message and "ambiguous" in ambiguous.value.message


def test_promotion_and_rollback_change_what_the_name_serves_at_the_next_request(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    v1 = hosted_version(project, lead, fake_openai_chat)
    v2 = hosted_version(project, lead, fake_openai_chat)
    promote(v1, lead)
    api = client(gateway, app_key(project, lead))

    def served() -> tuple[str, str]:
        answer = api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
        return answer.model, fake_openai_chat.bodies[-1]["model"]

    assert served() == ("Ticket triage/triage@1", v1.fine_tuned_model)
    promote(v2, lead)
    assert served() == ("Ticket triage/triage@2", v2.fine_tuned_model)
    model = v1.registered_model
    production_rollback(
        registered_model=model,
        user=lead,
        reason="complaints",
        expected_current_version=production_number(model),
        target_version=rollback_number(model),
    )
    assert served() == ("Ticket triage/triage@1", v1.fine_tuned_model)


def test_refusals_use_openais_status_codes_and_error_shape(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    Project.objects.create(name="Other team")
    key = app_key(project, lead)
    api = client(gateway, key)

    with pytest.raises(openai.AuthenticationError) as no_key:
        client(gateway, "ftp_000000000000." + "x" * 43).chat.completions.create(
            model="Ticket triage/production", messages=QUESTION
        )
    assert no_key.value.status_code == 401
    assert no_key.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "not-a-key").models.list()
    with pytest.raises(openai.PermissionDeniedError) as other:
        api.chat.completions.create(model="Other team/production", messages=QUESTION)
    assert "another project" in other.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        api.chat.completions.create(model="Ticket triage/staging", messages=QUESTION)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="Ticket triage/triage@9", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as invalid:
        api.chat.completions.create(
            model="Ticket triage/production", messages=QUESTION, max_tokens=0
        )
    assert invalid.value.param == "max_tokens" and "max_tokens" in invalid.value.message
    with pytest.raises(openai.BadRequestError) as no_messages:
        api.chat.completions.create(model="Ticket triage/production", messages=[])
    assert no_messages.value.param == "messages"

    # The raw answer: OpenAI's error object, and no session or CSRF token needed.
    raw = requests.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        data=b"{not json",
        timeout=30,
    )
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert fake_openai_chat.total_requests == 0  # nothing refused reached the backend


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    promote(hosted_version(project, lead, fake_openai_chat), lead)

    def minute() -> int:
        return int(time.time() // 60)

    # The limit counts per clock minute: three calls that straddle a minute's end prove
    # nothing (the third may rightly pass), so such a run is tried again with a fresh key.
    limited: openai.RateLimitError | None = None
    for attempt in range(3):
        api = client(
            gateway, app_key(project, lead, rate_limit_per_minute=2, name=f"bot {attempt}")
        )
        asked_before = fake_openai_chat.total_requests
        window = minute()
        for _ in range(2):
            api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
        try:
            api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
        except openai.RateLimitError as refusal:
            if minute() == window:
                limited = refusal
                break
        else:
            assert minute() != window, "a third call within one minute was not limited"
    assert limited is not None, "three tries each straddled a clock minute's end"
    assert limited.status_code == 429
    assert 1 <= int(limited.response.headers["Retry-After"]) <= 60
    assert limited.code == "rate_limit_exceeded"
    assert fake_openai_chat.total_requests - asked_before == 2


def test_a_failing_backend_is_an_error_for_the_client_not_a_hang(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    api = client(gateway, app_key(project, lead))
    # Each try fails (FTPORTAL_GATEWAY_BACKEND_ATTEMPTS of them).
    fake_openai_chat.fail_next_requests(settings.FTPORTAL_GATEWAY_BACKEND_ATTEMPTS, status=500)

    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as unavailable:
        api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
    assert unavailable.value.status_code == 503
    assert unavailable.value.code == "backend_unavailable"
    assert time.monotonic() - started < 15
    assert "Simulated" not in unavailable.value.message  # the backend's detail stays in the log

    fake_openai_chat.reject_items_containing("forbidden")
    with pytest.raises(openai.APIStatusError) as refused:
        api.chat.completions.create(
            model="Ticket triage/production",
            messages=[{"role": "user", "content": "a forbidden question"}],
            stream=True,
        )
    assert refused.value.status_code == 502
    assert refused.value.body is not None


def test_requests_waiting_on_a_slow_backend_are_answered_together(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    """Generation runs in threads: the event loop keeps taking requests while others wait."""
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    api = client(gateway, app_key(project, lead))
    fake_openai_chat.response_delay = 1.0

    def ask(number: int) -> str:
        answer = api.chat.completions.create(
            model="Ticket triage/production",
            messages=[{"role": "user", "content": f"question {number}"}],
        )
        return answer.choices[0].message.content or ""

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))

    assert answers == [expected_answer(f"question {n}") for n in range(8)]
    assert time.monotonic() - started < 4  # 8 one-second answers, not one after another
    assert fake_openai_chat.max_in_flight_seen >= 4


def test_each_answered_request_reaches_the_request_logs_call_site_and_refused_keys_do_not(
    gateway: str,
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = hosted_version(project, lead, fake_openai_chat)
    promote(version, lead)
    recorded: list[ServedRequest] = []
    monkeypatch.setattr(
        "serving.gateway.served_request_record", lambda *, served: recorded.append(served)
    )
    api = client(gateway, app_key(project, lead))

    api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, user="customer-7", stream=True
    ).close()
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="Ticket triage/staging", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "not-a-key").chat.completions.create(
            model="Ticket triage/production", messages=QUESTION
        )

    served, unknown = recorded
    assert served.status_code == 200 and served.error == "" and served.stream
    assert served.served_version == version and served.project == project
    assert served.requested_model == "Ticket triage/production"
    assert served.messages == QUESTION and served.caller_user == "customer-7"
    assert served.output == expected_answer("where is my invoice")
    assert (served.prompt_tokens, served.completion_tokens) == (4, 5)
    assert served.latency_seconds > 0 and served.request_id.startswith("req_")
    assert unknown.status_code == 404 and unknown.served_version is None
    assert "staging" in unknown.error


def test_answered_and_refused_requests_are_stored_in_the_request_log_under_the_answers_id(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = hosted_version(project, lead, fake_openai_chat)
    promote(version, lead)
    api = client(gateway, app_key(project, lead))

    answer = api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, user="customer-9"
    )
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="Ticket triage/staging", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "not-a-key").chat.completions.create(
            model="Ticket triage/production", messages=QUESTION
        )
    assert request_log_flush(timeout=30)

    served = RequestLog.objects.get(request_id=answer.id)
    assert served.project == project and served.served_version == version
    assert served.status == RequestStatus.OK and served.caller_user == "customer-9"
    assert served.messages == QUESTION and served.output == answer.choices[0].message.content
    assert (served.prompt_tokens, served.completion_tokens) == (4, 5)
    assert served.cost is None and not served.cost_known  # unpriced, never a zero
    refused = RequestLog.objects.exclude(pk=served.pk).get()  # the bad key left no row
    assert refused.status == RequestStatus.REFUSED and refused.served_version is None
    assert refused.requested_model == "Ticket triage/staging" and "staging" in refused.error
