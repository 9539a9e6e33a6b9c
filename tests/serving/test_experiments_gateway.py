"""Experiments as applications meet them: the official ``openai`` client against the gateway
under uvicorn while an experiment runs on the alias it calls. Each user meets one arm on every
request, a hosted baseline arm answers as the base model, pinned names bypass the split, the
log names each request's arm; the shadow arm's answer is generated after the answer is out,
never returned, and logged as its own row."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from fakes.chat_servers import (
    FakeOpenAIChatServer,
    expected_answer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from serving.models import RequestLog
from serving.request_log import request_log_flush
from serving.services import ArmSpec, experiment_create, experiment_start

from .experiment_builders import SUCCESS, Where, other_base, running_experiment, two_versions
from .gateway_server import fake_chat_key  # noqa: F401
from .test_gateway import QUESTION, app_key, client, gateway  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
WAIT_S = 60


def rows_when_stored(count: int, **filters: Any) -> list[RequestLog]:
    """The log rows matching ``filters`` once ``count`` of them are stored (polled)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        request_log_flush(timeout=WAIT_S)
        rows = list(RequestLog.objects.filter(**filters).order_by("id"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_each_user_meets_one_arm_through_the_openai_client(
    gateway: str,  # noqa: F811
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    versions = two_versions(project, lead, Where(fake_openai_chat.base_url))
    experiment = running_experiment(project, lead, versions, weights=(1, 1))
    api = client(gateway, app_key(project, lead))
    served: dict[str, set[str]] = defaultdict(set)

    for user in [f"customer-{n}" for n in range(16)]:
        for streamed in (False, True):
            if streamed:
                chunks = list(
                    api.chat.completions.create(
                        model="Ticket triage/production", messages=QUESTION, user=user, stream=True
                    )
                )
                served[user].add(chunks[0].model)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                answer = api.chat.completions.create(
                    model="Ticket triage/production", messages=QUESTION, user=user
                )
                served[user].add(answer.model)
                text = answer.choices[0].message.content or ""
            assert text == expected_answer("where is my invoice")

    assert all(len(models) == 1 for models in served.values())  # sticky, streamed or not
    seen = {model for models in served.values() for model in models}
    assert seen == {"Ticket triage/triage@1", "Ticket triage/triage@2"}

    pinned = api.chat.completions.create(
        model="Ticket triage/triage@2", messages=QUESTION, user="customer-0"
    )
    assert pinned.model == "Ticket triage/triage@2"

    rows = rows_when_stored(33, project=project)
    assert len(rows) == 33
    in_experiment = [row for row in rows if row.arm_id is not None]
    assert len(in_experiment) == 32  # the pinned request is outside the experiment
    arms = {arm.pk: arm for arm in experiment.arms.all()}
    for row in in_experiment:
        assert row.arm_id is not None
        arm = arms[row.arm_id]
        assert row.experiment_arm == arm.name
        assert row.served_version_id == arm.model_version_id
    by_user = defaultdict(set)
    for row in in_experiment:
        by_user[row.caller_user].add(row.arm_id)
    assert all(len(arm_ids) == 1 for arm_ids in by_user.values())


def test_a_hosted_baseline_arm_answers_as_the_base_model(
    gateway: str,  # noqa: F811
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    where = Where(fake_openai_chat.base_url)
    versions = two_versions(project, lead, where)
    baseline = other_base(where)
    experiment = experiment_create(
        project=project,
        user=lead,
        name="fine-tuned against hosted",
        registered_model=versions.first.registered_model,
        alias="production",
        success_event=SUCCESS,
        arms=[
            ArmSpec(name="ours", model_version_id=versions.first.pk),
            ArmSpec(name="hosted", base_model_key=baseline.key),
        ],
    )
    experiment_start(experiment=experiment, user=lead)
    api = client(gateway, app_key(project, lead))

    models = {
        api.chat.completions.create(
            model="Ticket triage/production", messages=QUESTION, user=f"customer-{n}"
        ).model
        for n in range(16)
    }

    assert models == {"Ticket triage/triage@1", baseline.key}
    asked = {body["model"] for body in fake_openai_chat.bodies[-16:]}
    assert asked == {versions.first.fine_tuned_model, baseline.key}
    rows = rows_when_stored(16, project=project, experiment_arm="hosted")
    assert rows and all(row.served_version_id is None for row in rows)


class HeldAnswers:
    """A scripted answer that waits until the test lets it go: the shadow's backend is busy
    for as long as the test says."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.release.wait(WAIT_S)
        return "the shadow's own answer"


@pytest.fixture
def held() -> HeldAnswers:
    return HeldAnswers()


@pytest.fixture
def shadow_server(held: HeldAnswers) -> Iterator[FakeOpenAIChatServer]:
    with FakeOpenAIChatServer(answer_with=held) as fake:
        yield fake
    held.release.set()


def test_the_shadow_arm_never_changes_or_delays_the_answer_and_logs_its_own_row(
    gateway: str,  # noqa: F811
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    shadow_server: FakeOpenAIChatServer,
    held: HeldAnswers,
) -> None:
    versions = two_versions(project, lead, Where(fake_openai_chat.base_url))
    shadow = other_base(Where(shadow_server.base_url))
    running_experiment(project, lead, versions, shadow=shadow, shadow_share=1.0)
    api = client(gateway, app_key(project, lead))

    answer = api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, user="customer-1"
    )

    # The answer is the arm's, out while the shadow's backend still holds its request.
    assert answer.choices[0].message.content == expected_answer("where is my invoice")
    assert answer.model in ("Ticket triage/triage@1", "Ticket triage/triage@2")
    assert not held.release.is_set()
    primary = rows_when_stored(1, request_id=answer.id)
    assert len(primary) == 1 and primary[0].shadow_of == ""
    assert not RequestLog.objects.filter(shadow_of=answer.id).exists()

    held.release.set()
    [mirrored] = rows_when_stored(1, shadow_of=answer.id)
    assert mirrored.output == "the shadow's own answer"
    assert mirrored.experiment_arm == "shadow" and mirrored.status == "ok"
    assert mirrored.caller_user == "customer-1" and mirrored.request_id != answer.id
    assert shadow_server.bodies[0]["model"] == shadow.key
    # The shadow's row is not the answered traffic: the arms' counts leave it out.
    assert primary[0].arm_id != mirrored.arm_id


def test_a_failing_shadow_arm_is_logged_and_the_answer_is_unaffected(
    gateway: str,  # noqa: F811
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    shadow_server: FakeOpenAIChatServer,
) -> None:
    versions = two_versions(project, lead, Where(fake_openai_chat.base_url))
    running_experiment(
        project, lead, versions, shadow=other_base(Where(shadow_server.base_url)), shadow_share=1.0
    )
    shadow_server.fail_next_requests(10, status=400, message="no such model")
    api = client(gateway, app_key(project, lead))

    answer = api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, user="customer-2"
    )

    assert answer.choices[0].message.content == expected_answer("where is my invoice")
    [mirrored] = rows_when_stored(1, shadow_of=answer.id)
    assert mirrored.status == "error" and mirrored.output == ""
    assert "The shadow arm shadow could not answer" in mirrored.error
