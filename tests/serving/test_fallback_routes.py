"""Fallback routes at the gateway, through the official ``openai`` client and a real uvicorn
server: a failing or slow primary is answered by the alias's route (a previous version, or a
hosted base model at a second fake server), the breaker stops asking a failing primary and asks
again after its cool-down, both failing is an error, and a pinned name never falls back. Every
fallback's log row says so."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from catalog.models import BaseModel, Provider
from fakes.chat_servers import (
    FakeOpenAIChatServer,
    expected_answer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from registry.models import Alias, ModelVersion
from serving.breaker import breakers
from serving.models import FallbackCause, FallbackRoute, RequestLog, RequestStatus
from serving.request_log import request_log_flush
from serving.services import RouteSettings, fallback_route_create
from tests.conftest import wait_until
from tests.factories import fake_endpoint

from .gateway_server import fake_chat_key  # noqa: F401
from .test_gateway import (
    KEY_ENV,
    QUESTION,
    app_key,
    client,
    hosted_version,
    promote,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
HOSTED_FALLBACK = "gpt-4o-2024-08-06"
# Each failed request of the primary is FTPORTAL_GATEWAY_BACKEND_ATTEMPTS tries at the fake.
TRIES = settings.FTPORTAL_GATEWAY_BACKEND_ATTEMPTS


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    breakers.reset()
    yield
    breakers.reset()


@pytest.fixture
def gateway() -> Iterator[str]:
    from .gateway_server import running_gateway

    with running_gateway() as origin:
        yield origin


@pytest.fixture
def second_fake() -> Iterator[FakeOpenAIChatServer]:
    """Another provider: where the hosted fallback model is served."""
    with FakeOpenAIChatServer() as fake:
        yield fake


def hosted_fallback(fake: FakeOpenAIChatServer) -> BaseModel:
    base, _ = BaseModel.objects.update_or_create(
        key=HOSTED_FALLBACK,
        defaults={
            "display_name": "GPT-4o",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("25.00"),
            "endpoint": fake_endpoint(fake.base_url, secret_env=KEY_ENV),
            "is_active": True,
        },
    )
    return base


def production_alias(version: ModelVersion) -> Alias:
    return Alias.objects.get(registered_model=version.registered_model, name="production")


def two_versions(
    project: Project, lead: User, fake: FakeOpenAIChatServer
) -> tuple[ModelVersion, ModelVersion]:
    """v1 promoted, then v2: production serves v2 and v1 is the previous production."""
    v1 = hosted_version(project, lead, fake)
    v2 = hosted_version(project, lead, fake)
    promote(v1, lead)
    promote(v2, lead)
    return v1, v2


def route_to(
    alias: Alias,
    lead: User,
    *,
    version: ModelVersion | None = None,
    base: BaseModel | None = None,
    timeout_seconds: float = 20.0,
    failures_to_open: int = 5,
    cooldown_seconds: float = 30.0,
) -> FallbackRoute:
    return fallback_route_create(
        alias=alias,
        user=lead,
        wanted=RouteSettings(
            fallback_version=version,
            fallback_base_model=base,
            timeout_seconds=timeout_seconds,
            failures_to_open=failures_to_open,
            cooldown_seconds=cooldown_seconds,
        ),
    )


def logged(request_id: str) -> RequestLog:
    assert request_log_flush(timeout=30)
    return RequestLog.objects.get(request_id=request_id)


def test_a_failing_primary_is_answered_by_the_previous_version_and_logged_as_a_fallback(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    v1, v2 = two_versions(project, lead, fake_openai_chat)
    route = route_to(production_alias(v2), lead, version=v1)
    fake_openai_chat.fail_model(v2.fine_tuned_model, 500)
    api = client(gateway, app_key(project, lead))

    answer = api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)

    assert answer.choices[0].message.content == expected_answer("where is my invoice")
    assert answer.model == "Ticket triage/triage@1"  # what answered, not what was asked for
    assert fake_openai_chat.requests_for_model(v2.fine_tuned_model) == TRIES
    assert fake_openai_chat.requests_for_model(v1.fine_tuned_model) == 1
    row = logged(answer.id)
    assert row.status == RequestStatus.FALLBACK and row.error == ""
    assert row.served_version == v1 and row.fallback_route == route
    assert row.fallback_cause == FallbackCause.ERROR
    assert "Ticket triage/triage@2" in row.fallback_reason
    assert row.requested_model == "Ticket triage/production"

    # Streamed, the same: the chunks name the fallback that answered.
    chunks = list(
        api.chat.completions.create(
            model="Ticket triage/triage/production", messages=QUESTION, stream=True
        )
    )
    assert {c.model for c in chunks} == {"Ticket triage/triage@1"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        expected_answer("where is my invoice")
    )


def test_a_primary_slower_than_the_routes_timeout_is_answered_by_the_hosted_fallback(
    gateway: str,
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    second_fake: FakeOpenAIChatServer,
) -> None:
    _, v2 = two_versions(project, lead, fake_openai_chat)
    base = hosted_fallback(second_fake)
    route_to(production_alias(v2), lead, base=base, timeout_seconds=1.0)
    # Far longer than the client waits: without the route's timeout the client gives up first.
    fake_openai_chat.response_delay = 120
    api = openai.OpenAI(
        base_url=f"{gateway}/v1", api_key=app_key(project, lead), max_retries=0, timeout=60
    )

    answer = api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)

    assert answer.model == HOSTED_FALLBACK
    assert answer.choices[0].message.content == expected_answer("where is my invoice")
    assert second_fake.bodies[-1]["model"] == HOSTED_FALLBACK
    row = logged(answer.id)
    assert row.status == RequestStatus.FALLBACK
    assert row.fallback_cause == FallbackCause.TIMEOUT and "1s" in row.fallback_reason
    assert row.served_version is None and row.served_base_model == base
    assert row.completion_tokens == 5  # the fallback's usage


def test_the_breaker_opens_after_n_failures_and_the_primary_is_not_asked_while_open(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    v1, v2 = two_versions(project, lead, fake_openai_chat)
    route_to(production_alias(v2), lead, version=v1, failures_to_open=2, cooldown_seconds=600)
    fake_openai_chat.fail_model(v2.fine_tuned_model, 503)
    api = client(gateway, app_key(project, lead))

    def ask() -> str:
        answer = api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
        assert answer.model == "Ticket triage/triage@1"
        return answer.id

    failed = [ask(), ask()]
    assert fake_openai_chat.requests_for_model(v2.fine_tuned_model) == 2 * TRIES
    skipped = [ask(), ask(), ask()]

    assert fake_openai_chat.requests_for_model(v2.fine_tuned_model) == 2 * TRIES  # not asked
    assert fake_openai_chat.requests_for_model(v1.fine_tuned_model) == 5
    assert [logged(i).fallback_cause for i in failed] == [FallbackCause.ERROR] * 2
    rows = [logged(i) for i in skipped]
    assert [row.fallback_cause for row in rows] == [FallbackCause.CIRCUIT_OPEN] * 3
    assert all("open after 2 failures" in row.fallback_reason for row in rows)
    assert {row.status for row in rows} == {RequestStatus.FALLBACK}


def test_a_primary_that_refuses_requests_as_invalid_is_asked_again_its_circuit_stays_closed(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    v1, v2 = two_versions(project, lead, fake_openai_chat)
    route_to(production_alias(v2), lead, version=v1, failures_to_open=2, cooldown_seconds=600)
    # A 400 refuses the request, not the backend: bad requests must not open its circuit.
    fake_openai_chat.fail_model(v2.fine_tuned_model, 400)
    api = client(gateway, app_key(project, lead))

    answers = [
        api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)
        for _ in range(4)
    ]

    assert {answer.model for answer in answers} == {"Ticket triage/triage@1"}  # the route's
    # Each of the four was asked of the primary once (a refusal is not tried again): no
    # circuit opened after two.
    assert fake_openai_chat.requests_for_model(v2.fine_tuned_model) == 4
    rows = [logged(answer.id) for answer in answers]
    assert [row.fallback_cause for row in rows] == [FallbackCause.ERROR] * 4


def test_after_its_cooldown_a_trial_request_reaches_the_recovered_primary_and_closes_it(
    gateway: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    v1, v2 = two_versions(project, lead, fake_openai_chat)
    route_to(production_alias(v2), lead, version=v1, failures_to_open=1, cooldown_seconds=0.2)
    fake_openai_chat.fail_model(v2.fine_tuned_model, 503)
    api = client(gateway, app_key(project, lead))

    def ask() -> openai.types.chat.ChatCompletion:
        return api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)

    assert ask().model == "Ticket triage/triage@1"  # failed once: open
    fake_openai_chat.fail_model(v2.fine_tuned_model, None)

    wait_until(
        lambda: ask().model == "Ticket triage/triage@2",
        timeout=60,
        what="a trial request answered by the recovered primary",
    )
    again = ask()
    assert again.model == "Ticket triage/triage@2"
    assert logged(again.id).status == RequestStatus.OK


def test_when_the_fallback_fails_too_the_client_gets_openais_error_and_the_row_says_error(
    gateway: str,
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    second_fake: FakeOpenAIChatServer,
) -> None:
    _, v2 = two_versions(project, lead, fake_openai_chat)
    route = route_to(production_alias(v2), lead, base=hosted_fallback(second_fake))
    fake_openai_chat.fail_model(v2.fine_tuned_model, 500)
    second_fake.fail_model(HOSTED_FALLBACK, 400)
    api = client(gateway, app_key(project, lead))

    with pytest.raises(openai.APIStatusError) as failed:
        api.chat.completions.create(model="Ticket triage/production", messages=QUESTION)

    assert failed.value.status_code == 502  # the fallback's refusal
    assert failed.value.code == "backend_error"
    assert "Simulated" not in failed.value.message  # the backends' own words stay in the log
    assert second_fake.requests_for_model(HOSTED_FALLBACK) == 1
    assert request_log_flush(timeout=30)
    row = RequestLog.objects.get()
    assert row.status == RequestStatus.ERROR and "fallback failed too" in row.error
    assert row.fallback_route == route and row.fallback_cause == FallbackCause.ERROR


def test_a_pinned_name_never_falls_back(
    gateway: str,
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    second_fake: FakeOpenAIChatServer,
) -> None:
    _, v2 = two_versions(project, lead, fake_openai_chat)
    route_to(production_alias(v2), lead, base=hosted_fallback(second_fake))
    fake_openai_chat.fail_model(v2.fine_tuned_model, 500)
    api = client(gateway, app_key(project, lead))

    with pytest.raises(openai.InternalServerError) as failed:
        api.chat.completions.create(model="Ticket triage/triage@2", messages=QUESTION)

    assert failed.value.status_code == 503
    assert second_fake.total_requests == 0
    assert request_log_flush(timeout=30)
    row = RequestLog.objects.get()
    assert row.status == RequestStatus.ERROR and row.fallback_route is None


def test_a_disabled_route_is_not_used(
    gateway: str,
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    second_fake: FakeOpenAIChatServer,
) -> None:
    _, v2 = two_versions(project, lead, fake_openai_chat)
    route = route_to(production_alias(v2), lead, base=hosted_fallback(second_fake))
    FallbackRoute.objects.filter(pk=route.pk).update(enabled=False)
    fake_openai_chat.fail_model(v2.fine_tuned_model, 500)

    with pytest.raises(openai.InternalServerError):
        client(gateway, app_key(project, lead)).chat.completions.create(
            model="Ticket triage/production", messages=QUESTION
        )
    assert second_fake.total_requests == 0
