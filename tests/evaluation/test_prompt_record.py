"""What each candidate was actually sent: recorded as it starts answering (its system prompt or
the items' own, its user template, the few-shot examples drawn with their positions and source
version, and the first item as sent), equal to what the provider received, returned by the API
and shown on the evaluation page, escaped."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import DatasetVersion, Split
from evaluation.models import Candidate, CandidateKind, EvalRun, EvalSplit, EvalStatus, Prompting
from evaluation.prompting import shot_turns
from evaluation.runner import eval_run_execute
from evaluation.services import CandidateSpec, eval_run_create
from fakes.chat_servers import (
    DEFAULT_API_KEY,
    FakeOpenAIChatServer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import api, token_client
from tests.factories import SYSTEM, fake_endpoint, frozen_version

pytestmark = pytest.mark.django_db
KEY_ENV = "FAKE_CHAT_KEY"
OWN_SYSTEM_PROMPT = "Answer with one word. <b>Never</b> explain."
TEMPLATE = "Ticket: {input}"


@pytest.fixture(autouse=True)
def chat_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, DEFAULT_API_KEY)


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def hosted(fake: FakeOpenAIChatServer, **changes: Any) -> CandidateSpec:
    fields: dict[str, Any] = {
        "kind": CandidateKind.OPENAI_COMPATIBLE,
        "api_model": "gpt-4o-mini",
        "endpoint": fake_endpoint(fake.base_url, secret_env=KEY_ENV),
        "input_usd_per_million_tokens": Decimal("0.30"),
        "output_usd_per_million_tokens": Decimal("1.20"),
    }
    fields.update(changes)
    return CandidateSpec(**fields)


def executed(version: DatasetVersion, lead: User, *specs: CandidateSpec) -> EvalRun:
    run = eval_run_create(
        project=version.dataset.project,
        dataset_version=version,
        split=EvalSplit.VALIDATION,
        candidates=list(specs),
        user=lead,
        max_new_tokens=16,
    )
    finished = eval_run_execute(run_id=run.pk)
    assert finished is not None and finished.status == EvalStatus.SUCCEEDED, run.error
    return finished


@pytest.fixture
def shots_version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=20)


@pytest.fixture
def evaluated(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=15)


def few_shot_run(
    evaluated: DatasetVersion,
    shots_version: DatasetVersion,
    lead: User,
    fake: FakeOpenAIChatServer,
) -> EvalRun:
    return executed(
        evaluated,
        lead,
        hosted(
            fake,
            prompting=Prompting.FEW_SHOT,
            few_shot_k=2,
            few_shot_seed=7,
            shots_version=shots_version,
            system_prompt=OWN_SYSTEM_PROMPT,
            user_template=TEMPLATE,
        ),
    )


def test_the_record_is_what_the_provider_received(
    evaluated: DatasetVersion,
    shots_version: DatasetVersion,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    run = few_shot_run(evaluated, shots_version, lead, fake_openai_chat)
    record = run.candidates.get().prompt_record

    assert record["prompting"] == Prompting.FEW_SHOT
    assert record["system_prompt"] == {"source": "candidate", "text": OWN_SYSTEM_PROMPT}
    assert record["user_template"] == TEMPLATE
    assert record["shots_version"] == {"id": shots_version.pk, "name": str(shots_version)}
    # Each shot names an example of the source version's training split, as it was sent.
    assert len(record["shots"]) == 2
    train = {item.position: item for item in shots_version.items.filter(split=Split.TRAIN)}
    for shot in record["shots"]:
        assert shot["messages"] == shot_turns(train[shot["position"]].messages)
    # Every request began with that system prompt and those shots, in that order.
    sent = [body["messages"] for body in fake_openai_chat.bodies]
    assert len(sent) == evaluated.validation_count
    recorded_turns = [turn for shot in record["shots"] for turn in shot["messages"]]
    head = [{"role": "system", "content": OWN_SYSTEM_PROMPT}, *recorded_turns]
    assert all(messages[: len(head)] == head for messages in sent)
    # The first item, as sent, is one of the requests, word for word.
    first = record["first_item"]
    first_item = evaluated.items.filter(split=Split.VALIDATION).order_by("position")[0]
    assert first["position"] == first_item.position
    assert first["messages"] in sent
    assert first["messages"][-1]["content"] == TEMPLATE.replace(
        "{input}", first_item.messages[-2]["content"]
    )


def test_a_candidate_without_its_own_system_prompt_records_the_items_own(
    evaluated: DatasetVersion, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    run = executed(evaluated, lead, hosted(fake_openai_chat))
    record = run.candidates.get().prompt_record

    assert record["system_prompt"] == {"source": "items", "texts": [SYSTEM], "distinct": 1}
    assert record["shots"] == [] and record["shots_version"] is None
    assert record["user_template"] == "{input}"
    assert fake_openai_chat.bodies[0]["messages"][0] == {"role": "system", "content": SYSTEM}


def test_the_api_returns_each_candidates_record(
    evaluated: DatasetVersion,
    shots_version: DatasetVersion,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    run = few_shot_run(evaluated, shots_version, lead, fake_openai_chat)
    stored = run.candidates.get().prompt_record
    client = token_client(lead)

    detail = client.get(api(evaluated.dataset.project, f"evaluations/{run.pk}/")).json()
    listed = client.get(api(evaluated.dataset.project, "evaluations/")).json()["results"]

    assert detail["candidates"][0]["prompt_record"] == stored
    assert next(r for r in listed if r["id"] == run.pk)["candidates"][0]["prompt_record"] == stored


def test_the_evaluation_page_shows_what_was_sent_escaped(
    evaluated: DatasetVersion,
    shots_version: DatasetVersion,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    client: Client,
) -> None:
    run = few_shot_run(evaluated, shots_version, lead, fake_openai_chat)
    record = run.candidates.get().prompt_record
    client.force_login(lead)

    html = client.get(reverse("eval_detail", args=[run.dataset_version.dataset.project_id, run.pk]))
    text = html.content.decode()

    assert 'id="what-was-sent"' in text
    assert "Answer with one word. &lt;b&gt;Never&lt;/b&gt; explain." in text
    assert "<b>Never</b>" not in text
    for shot in record["shots"]:
        assert f'data-position="{shot["position"]}"' in text
    version_url = reverse(
        "version_detail", args=[shots_version.dataset.project_id, shots_version.pk]
    )
    assert f'href="{version_url}"' in text


def test_a_candidate_not_asked_yet_has_no_record_and_the_page_says_so(
    evaluated: DatasetVersion, lead: User, fake_openai_chat: FakeOpenAIChatServer, client: Client
) -> None:
    run = eval_run_create(
        project=evaluated.dataset.project,
        dataset_version=evaluated,
        split=EvalSplit.VALIDATION,
        candidates=[hosted(fake_openai_chat)],
        user=lead,
    )
    client.force_login(lead)

    page = client.get(reverse("eval_detail", args=[evaluated.dataset.project_id, run.pk]))

    assert Candidate.objects.get(run=run).prompt_record == {}
    assert "not asked yet" in page.content.decode()
