"""A name's plan at the gateway: read once per process when none is kept, however many
requests arrive while it is being read, and read anew for requests after a change."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib.auth.models import User

from fakes.chat_servers import (
    FakeOpenAIChatServer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from registry.models import Alias
from serving import gateway
from serving.plans import ServingPlan
from serving.services import application_key_create

from .gateway_server import fake_chat_key, running_gateway  # noqa: F401
from .test_gateway import QUESTION, client, hosted_version, promote
from .test_gateway_costs import another_process_commits_a_plan_change

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
MODEL = "Ticket triage/production"
REQUESTS = 20


def test_requests_arriving_while_a_plan_is_read_wait_for_that_one_read(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 60  # kept for the whole test once read
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    key = application_key_create(project=project, user=lead, name="bot").plaintext
    reads: list[str] = []
    lock = threading.Lock()
    read_for_real = gateway._plan_with_chats

    def slow_read(project: Project, name: str, generation: str | None) -> ServingPlan:
        with lock:
            reads.append(name)
        time.sleep(1.0)  # long enough for every request below to arrive meanwhile
        return read_for_real(project, name, generation)

    monkeypatch.setattr(gateway, "_plan_with_chats", slow_read)

    with running_gateway() as origin:
        api = client(origin, key)

        def ask(_: int) -> str:
            answer = api.chat.completions.create(model=MODEL, messages=QUESTION)
            return answer.model

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            served = list(pool.map(ask, range(REQUESTS)))

        assert served == ["Ticket triage/triage@1"] * REQUESTS
        assert reads == [MODEL]  # one read for all twenty

        # A promotion forgets the plans: the next request reads the name again.
        promote(hosted_version(project, lead, fake_openai_chat), lead)
        assert ask(0) == "Ticket triage/triage@2"
        assert reads == [MODEL, MODEL]
        assert gc.get_freeze_count() > 0  # the server's long-lived objects (ftportal.collector)

    # Its lifespan has ended: nothing of this (test) process is left frozen.
    assert gc.get_freeze_count() == 0


def test_a_change_committed_in_another_process_is_served_from_the_next_request(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    settings: Any,
) -> None:
    """The plans' token comes back with each request's admission (serving.generations): the
    kept plan serves until another process's commit replaces it, then the rows are read."""
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 1  # the gateway keeps plans longer than this
    first = hosted_version(project, lead, fake_openai_chat)
    promote(first, lead)
    second = hosted_version(project, lead, fake_openai_chat)
    key = application_key_create(project=project, user=lead, name="bot").plaintext

    def served_model() -> str:
        return client(origin, key).chat.completions.create(model=MODEL, messages=QUESTION).model

    with running_gateway() as origin:
        assert served_model() == "Ticket triage/triage@1"
        # Moved as another process's commit leaves it, before its token is replaced: the row
        # changed, and nothing was said to this process.
        Alias.objects.filter(registered_model=first.registered_model, name="production").update(
            model_version=second
        )
        time.sleep(1.5)  # past the TTL: only the token keeps the plan now
        assert served_model() == "Ticket triage/triage@1"

        another_process_commits_a_plan_change()
        assert served_model() == "Ticket triage/triage@2"
