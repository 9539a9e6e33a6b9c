"""Evaluation runs end to end in this process: mixed candidates (the local model, an
OpenAI-compatible endpoint and the Anthropic Messages API through their real SDKs against the
fakes), resuming without recomputing, rate limits, refused items, and the report."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.models import BaseModel, Endpoint, EndpointKind
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from evaluation import runner
from evaluation.models import (
    CandidateKind,
    EvalResult,
    EvalRun,
    EvalSplit,
    EvalStatus,
    JudgeVerdict,
    Prompting,
)
from evaluation.reaper import abandoned_eval_runs_reap
from evaluation.runner import eval_run_execute, progress
from evaluation.selectors import judge_agreement
from evaluation.services import (
    CandidateSpec,
    JudgeSpec,
    eval_run_create,
    eval_run_resume,
    human_preference_record,
)
from fakes.chat_servers import (
    DEFAULT_API_KEY,
    FakeAnthropicServer,
    FakeOpenAIChatServer,
    expected_answer,
    fake_anthropic_fixture,  # noqa: F401
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from tests.factories import fake_endpoint, frozen_version

pytestmark = pytest.mark.django_db
KEY_ENV = "FAKE_CHAT_KEY"


@pytest.fixture(autouse=True)
def chat_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fakes' key, where the worker would read it: the environment, named per candidate."""
    monkeypatch.setenv(KEY_ENV, DEFAULT_API_KEY)


QUESTIONS = [f"question number {i} about invoices" for i in range(6)]


def held_out_version(project: Project, user: User, count: int = 6) -> DatasetVersion:
    """Six items; the fakes echo the question, so exactly the even ones are right for them."""
    dataset = Dataset.objects.create(project=project, name="held-out")
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=ExampleStatus.APPROVED,
            messages=[
                {"role": "user", "content": question},
                {
                    "role": "assistant",
                    "content": expected_answer(question) if i % 2 == 0 else "billing",
                },
            ],
        )
        for i, question in enumerate(QUESTIONS[:count])
    )
    return dataset_version_freeze(dataset=dataset, user=user, validation_fraction=0.2)


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def openai_spec(fake: FakeOpenAIChatServer, **changes: object) -> CandidateSpec:
    fields: dict[str, object] = {
        "kind": CandidateKind.OPENAI_COMPATIBLE,
        "api_model": "gpt-4o-mini",
        "endpoint": fake_endpoint(fake.base_url, secret_env=KEY_ENV),
        "input_usd_per_million_tokens": Decimal("0.30"),
        "output_usd_per_million_tokens": Decimal("1.20"),
    }
    fields.update(changes)
    return CandidateSpec(**fields)  # type: ignore[arg-type]


def run_of(project: Project, lead: User, version: DatasetVersion, *specs: CandidateSpec) -> EvalRun:
    return eval_run_create(
        project=project,
        dataset_version=version,
        split=EvalSplit.ALL,
        candidates=list(specs),
        user=lead,
        max_new_tokens=16,
    )


def judged_run(
    project: Project,
    lead: User,
    version: DatasetVersion,
    fake: FakeOpenAIChatServer,
    judge: JudgeSpec,
) -> EvalRun:
    """A reference candidate and a "parrot" (its template prefixes "Say:"), and a judge."""
    return eval_run_create(
        project=project,
        dataset_version=version,
        split=EvalSplit.ALL,
        candidates=[
            openai_spec(fake),
            openai_spec(fake, user_template="Say: {input}", label="parrot"),
        ],
        user=lead,
        judge=judge,
    )


def anthropic_judge(
    fake: FakeAnthropicServer,
    input_price: Decimal | None = None,
    output_price: Decimal | None = None,
) -> JudgeSpec:
    return JudgeSpec(
        kind=CandidateKind.ANTHROPIC,
        model="claude-haiku-4-5",
        endpoint=fake_endpoint(fake.base_url, secret_env=KEY_ENV, kind=EndpointKind.ANTHROPIC),
        input_usd_per_million_tokens=input_price,
        output_usd_per_million_tokens=output_price,
    )


def executed(run: EvalRun) -> EvalRun:
    finished = eval_run_execute(run_id=run.pk)
    assert finished is not None, "this worker should have owned the run"
    return finished


def test_one_run_scores_a_local_model_an_openai_endpoint_and_anthropic_few_shot(
    project: Project,
    lead: User,
    base_model: BaseModel,
    fake_openai_chat: FakeOpenAIChatServer,
    fake_anthropic: FakeAnthropicServer,
) -> None:
    version = held_out_version(project, lead)
    shots = frozen_version(project, lead)
    run = run_of(
        project,
        lead,
        version,
        openai_spec(fake_openai_chat),
        CandidateSpec(kind=CandidateKind.BASE, base_model=base_model),
        CandidateSpec(
            kind=CandidateKind.ANTHROPIC,
            api_model="claude-haiku-4-5",
            endpoint=fake_endpoint(
                fake_anthropic.base_url, secret_env=KEY_ENV, kind=EndpointKind.ANTHROPIC
            ),
            prompting=Prompting.FEW_SHOT,
            few_shot_k=2,
            shots_version=shots,
        ),
    )
    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    hosted, local, anthropic = run.candidates.all()
    for candidate in (hosted, local, anthropic):
        assert candidate.results.count() == 6
        assert candidate.example_count == 6 and candidate.failed_count == 0
    assert hosted.metrics["means"]["exact_match"] == pytest.approx(0.5)
    assert anthropic.metrics["means"]["exact_match"] == pytest.approx(0.5)
    # The fake counts words: the hosted candidate's cost follows from its usage and prices.
    usage = hosted.results.values_list("prompt_tokens", "completion_tokens")
    tokens_in = sum(p for p, _ in usage)
    tokens_out = sum(c for _, c in usage)
    expected = (tokens_in * Decimal("0.30") + tokens_out * Decimal("1.20")) * 1000 / (6 * 10**6)
    assert Decimal(hosted.metrics["cost_per_1000_usd"]) == expected.quantize(Decimal("0.000001"))
    assert Decimal(hosted.metrics["cost_usd"]) == (expected * 6 / 1000).quantize(
        Decimal("0.000001")
    )
    # A local model has no token price: 1,000 requests cost its measured machine time at the
    # configured hourly rate. Its answers are generated in batches, so its latency is the
    # batch average per request, stored without percentiles that would only repeat it.
    seconds = [s for s in local.results.values_list("latency_seconds", flat=True) if s is not None]
    assert len(seconds) == local.results.count()
    rate = float(settings.FTPORTAL_LOCAL_USD_PER_HOUR)
    assert float(local.metrics["cost_per_1000_usd"]) == pytest.approx(
        sum(seconds) / len(seconds) * rate / 3600 * 1000, abs=1e-6
    )
    assert float(local.metrics["cost_per_1000_usd"]) > 0
    assert local.metrics["latency"]["measured"] == "batch_average"
    assert "p50" not in local.metrics["latency"] and "p95" not in local.metrics["latency"]
    assert hosted.metrics["latency"]["measured"] == "per_request"
    assert hosted.metrics["latency"]["p95"] >= hosted.metrics["latency"]["p50"] > 0
    # Two worked examples went before each question, as alternating turns.
    sent = fake_anthropic.bodies[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert sent[-1]["content"] in QUESTIONS
    # The first candidate is the reference of every comparison, on every metric it has.
    pairs = {(c["a"], c["b"]) for c in finished.report["comparisons"]}
    assert pairs == {(hosted.pk, local.pk), (hosted.pk, anthropic.pk)}
    exact = [c for c in finished.report["comparisons"] if c["metric"] == "exact_match"]
    versus_anthropic = next(c for c in exact if c["b"] == anthropic.pk)
    assert versus_anthropic["difference"] == 0 and not versus_anthropic["significant"]
    assert versus_anthropic["wins"] == versus_anthropic["losses"] == 0
    assert versus_anthropic["ties"] == 6
    assert any(v.startswith("No significant difference") for v in finished.report["verdicts"])
    assert progress(finished) == (18, 18)


def test_a_resumed_run_asks_only_for_the_items_it_has_no_answer_for(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    candidate = run.candidates.get()
    items = list(version.items.order_by("position"))
    EvalResult.objects.bulk_create(
        EvalResult(candidate=candidate, item=item, output="stored earlier", scores={})
        for item in items[:4]
    )

    eval_run_execute(run_id=run.pk)

    assert fake_openai_chat.total_requests == 2
    asked = set(fake_openai_chat.requests_by_item)
    assert asked == {item.messages[0]["content"] for item in items[4:]}
    assert candidate.results.count() == 6
    assert candidate.results.filter(output="stored earlier").count() == 4


def test_rate_limits_are_waited_out_and_every_item_is_scored_once(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    fake_openai_chat.fail_next_requests(3, status=429, headers={"Retry-After": "0.2"})
    fake_openai_chat.fail_next_requests(2, status=500)

    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    assert set(fake_openai_chat.answers_by_item.values()) == {1}
    assert len(fake_openai_chat.answers_by_item) == 6
    assert run.candidates.get().results.count() == 6


def test_an_item_the_provider_refuses_is_stored_as_a_failure_and_the_rest_go_on(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    fake_openai_chat.reject_items_containing("number 3")

    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    candidate = run.candidates.get()
    refused = candidate.results.get(item__messages__0__content=QUESTIONS[3])
    assert "Item" in refused.error and refused.output == ""
    assert refused.scores["exact_match"] == 0.0
    assert candidate.failed_count == 1 and candidate.results.count() == 6


def test_a_rate_limit_that_outlasts_the_retries_fails_the_run_and_resuming_finishes_it(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    fake_openai_chat.fail_next_requests(200, status=503)

    failed = executed(run)
    assert failed.status == EvalStatus.FAILED
    assert "gave up after" in failed.error

    fake_openai_chat._failures.clear()  # the provider recovered
    eval_run_resume(run=failed)
    finished = executed(run)
    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    assert finished.attempts == 2
    assert run.candidates.get().results.count() == 6


def test_an_attempt_the_reaper_gave_up_on_stores_nothing(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    save = runner._save

    def save_after_takeover(*args: Any, **kwargs: Any) -> None:
        # The first answer arrives after the reaper handed the run to another attempt.
        EvalRun.objects.filter(pk=run.pk).update(attempts=7)
        save(*args, **kwargs)

    monkeypatch.setattr(runner, "_save", save_after_takeover)
    assert eval_run_execute(run_id=run.pk) is None
    assert EvalResult.objects.filter(candidate__run=run).count() == 0
    run.refresh_from_db()
    assert run.status == EvalStatus.RUNNING and run.attempts == 7


def test_the_reaper_requeues_a_silent_run_and_fails_it_after_the_last_attempt(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    EvalRun.objects.filter(pk=run.pk).update(
        status=EvalStatus.RUNNING, attempts=1, heartbeat_at=long_ago, started_at=long_ago
    )
    assert abandoned_eval_runs_reap() == [run.pk]
    run.refresh_from_db()
    assert run.status == EvalStatus.QUEUED and run.heartbeat_at is None

    EvalRun.objects.filter(pk=run.pk).update(
        status=EvalStatus.RUNNING, attempts=3, heartbeat_at=long_ago
    )
    assert abandoned_eval_runs_reap() == [run.pk]
    run.refresh_from_db()
    assert run.status == EvalStatus.FAILED and "gave up after 3 attempts" in run.error

    fresh = run_of(project, lead, version, openai_spec(fake_openai_chat))
    EvalRun.objects.filter(pk=fresh.pk).update(
        status=EvalStatus.RUNNING, attempts=1, heartbeat_at=timezone.now()
    )
    assert abandoned_eval_runs_reap() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"api_model": " "}, "candidates[0].api_model"),
        # A hosted candidate is called only at an endpoint an admin registered.
        ({"endpoint": None}, "candidates[0].endpoint"),
        ({"user_template": "no placeholder"}, "candidates[0].user_template"),
        ({"prompting": Prompting.FEW_SHOT, "few_shot_k": 0}, "candidates[0].few_shot_k"),
        ({"prompting": Prompting.FEW_SHOT, "few_shot_k": 2}, "candidates[0].shots_version"),
        (
            {"input_usd_per_million_tokens": Decimal("-1")},
            "candidates[0].input_usd_per_million_tokens",
        ),
    ],
)
def test_a_bad_candidate_is_refused_naming_its_field_and_nothing_is_stored(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    change: dict[str, object],
    field: str,
) -> None:
    version = held_out_version(project, lead)
    with pytest.raises(ApplicationError) as refused:
        run_of(project, lead, version, openai_spec(fake_openai_chat, **change))
    assert refused.value.extra["field"] == field
    assert not EvalRun.objects.exists()


def test_a_hosted_judge_needs_a_registered_endpoint(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    judge = JudgeSpec(kind=CandidateKind.ANTHROPIC, model="claude-haiku-4-5")
    with pytest.raises(ApplicationError, match="registered endpoint") as refused:
        judged_run(project, lead, version, fake_openai_chat, judge)
    assert refused.value.extra["field"] == "judge.endpoint"
    assert not EvalRun.objects.exists()


def test_a_stored_run_whose_endpoint_names_an_unlisted_variable_fails_without_reading_it(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    # As a row saved before the operator narrowed FTPORTAL_SECRET_ENVS would be.
    endpoint = run.candidates.get().endpoint
    assert endpoint is not None
    Endpoint.objects.filter(pk=endpoint.pk).update(secret_env="DJANGO_SECRET_KEY")

    finished = eval_run_execute(run_id=run.pk)

    assert finished is not None and finished.status == EvalStatus.FAILED
    assert "DJANGO_SECRET_KEY is not a secret variable endpoints may use" in finished.error
    assert settings.SECRET_KEY not in finished.error
    assert fake_openai_chat.total_requests == 0


def test_a_bad_regex_check_is_refused_before_anything_runs(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    with pytest.raises(ApplicationError) as refused:
        eval_run_create(
            project=project,
            dataset_version=version,
            split=EvalSplit.ALL,
            candidates=[openai_spec(fake_openai_chat)],
            user=lead,
            regex_check="([unclosed",
        )
    assert refused.value.extra["field"] == "regex_check"
    assert not EvalRun.objects.exists()


def test_checks_and_json_scores_apply_when_configured(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = eval_run_create(
        project=project,
        dataset_version=version,
        split=EvalSplit.ALL,
        candidates=[openai_spec(fake_openai_chat)],
        user=lead,
        regex_check=r"^ECHO: QUESTION NUMBER [0-2]\b",
        contains_check="number 5",
    )
    eval_run_execute(run_id=run.pk)
    means = run.candidates.get().metrics["means"]
    assert means["regex"] == pytest.approx(3 / 6)
    assert means["contains"] == pytest.approx(1 / 6)
    assert "json_valid" not in means  # no reference is JSON


def test_every_candidate_gets_contract_validity_and_json_items_left_out_are_reported(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    # The fake echoes the question: the contract accepts the echo of questions 0 to 2 only.
    dataset = Dataset.objects.create(
        project=project,
        name="contracted",
        answer_contract={"kind": "regex", "pattern": r"ECHO: QUESTION NUMBER [0-2] ABOUT INVOICES"},
    )
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=ExampleStatus.APPROVED,
            messages=[
                {"role": "user", "content": question},
                # Four JSON references and two that are not (as in the observed v1).
                {"role": "assistant", "content": '{"a": 1}' if i < 4 else "not json"},
            ],
        )
        for i, question in enumerate(QUESTIONS)
    )
    version = dataset_version_freeze(
        dataset=dataset, user=lead, validation_fraction=0.2, contract_override_reason="test data"
    )
    run = executed(run_of(project, lead, version, openai_spec(fake_openai_chat)))
    metrics = run.candidates.get().metrics
    assert metrics["means"]["contract_valid"] == pytest.approx(3 / 6)
    assert metrics["json_left_out"] == {
        "items": 2,
        "reason": "the expected answer is not a JSON object",
    }
    assert "contract_valid" in run.report["metrics"]
    client = Client()
    client.force_login(lead)
    page = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    assert '<th data-metric="contract_valid">contract validity</th>' in page
    assert "leave out 2 item(s): the expected answer is not a JSON object" in page
    api = client.get(f"/api/projects/{project.pk}/evaluations/{run.pk}/").json()
    assert "contract_valid" in json.dumps(api)


def test_a_judge_compares_the_reference_with_each_candidate_in_both_orders(
    project: Project,
    lead: User,
    make_member: Callable[[Role], User],
    fake_openai_chat: FakeOpenAIChatServer,
    fake_anthropic: FakeAnthropicServer,
) -> None:
    version = held_out_version(project, lead)

    def judge(messages: list[dict[str, str]]) -> str:
        # Prefers whichever answer does not parrot the template's "Say:" prefix.
        text = messages[-1]["content"]
        first = text[text.index("ANSWER 1") : text.index("ANSWER 2")]
        return "Reasoning.\nVerdict: 2" if "SAY:" in first else "Reasoning.\nVerdict: 1"

    fake_anthropic.answer_with = judge
    run = judged_run(
        project,
        lead,
        version,
        fake_openai_chat,
        anthropic_judge(fake_anthropic, input_price=Decimal("1.00"), output_price=Decimal("5.00")),
    )
    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    reference, parrot = run.candidates.all()
    verdicts = JudgeVerdict.objects.filter(run=run)
    assert verdicts.count() == 6 and set(verdicts.values_list("outcome", flat=True)) == {"a"}
    assert set(verdicts.values_list("original", "swapped")) == {("1", "2")}
    assert fake_anthropic.total_requests == 12  # every item twice, positions swapped
    (judged,) = finished.report["judge"]
    assert (judged["a"], judged["b"]) == (reference.pk, parrot.pk)
    assert (judged["a_wins"], judged["b_wins"], judged["ties"]) == (6, 0, 0)
    assert judged["position_consistency"] == 1.0
    assert judged["sentence"].startswith(f"The judge preferred {reference.label} on 6")
    # The fake counts words; "Reasoning. Verdict: 1" is three, twice per item.
    assert sum(verdicts.values_list("completion_tokens", flat=True)) == 6 * 2 * 3
    judge_in = sum(verdicts.values_list("prompt_tokens", flat=True))
    assert judge_in > 0
    expected_cost = (judge_in * Decimal("1.00") + 36 * Decimal("5.00")) / 1_000_000
    assert Decimal(finished.report["judge_cost_usd"]) == expected_cost.quantize(Decimal("0.000001"))

    # People rated four items; the judge agrees with three of them.
    rater = make_member(Role.REVIEWER)
    items = list(version.items.order_by("position"))
    for item, choice in zip(items[:4], ["a", "a", "a", "b"], strict=True):
        human_preference_record(
            candidate_a=reference,
            candidate_b=parrot,
            item_id=item.pk,
            rater=rater,
            choice=choice,
        )
    (row,) = judge_agreement(finished)
    assert row.agreement is not None
    assert (row.agreement.items, row.agreement.percent) == (4, 0.75)

    # Resuming a finished judge pass asks nothing again.
    EvalRun.objects.filter(pk=run.pk).update(status=EvalStatus.QUEUED)
    executed(run)
    assert fake_anthropic.total_requests == 12


def test_verdicts_that_came_in_before_the_judge_failed_are_kept_and_not_asked_again(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    fake_anthropic: FakeAnthropicServer,
) -> None:
    # Verdicts are written in batches; the batch under way when the judge fails must still be
    # written, or resuming pays for those verdicts twice.
    version = held_out_version(project, lead)
    run = judged_run(
        project,
        lead,
        version,
        fake_openai_chat,
        anthropic_judge(fake_anthropic),
    )
    # The judge's first request is refused for good: that item gets no verdict and the run
    # fails, after the requests already in flight have been answered.
    fake_anthropic.fail_next_requests(1, status=400)

    failed = executed(run)

    assert failed.status == EvalStatus.FAILED
    # Which requests were in flight when the refusal came back depends on timing; every item
    # the judge answered in both orders by then must keep its verdict.
    answers_per_item = Counter(
        {
            question: sum(
                count
                for prompt, count in fake_anthropic.answers_by_item.items()
                if question in prompt
            )
            for question in QUESTIONS
        }
    )
    kept = JudgeVerdict.objects.filter(run=run).count()
    assert kept == sum(1 for count in answers_per_item.values() if count == 2)
    sent_before_resuming = fake_anthropic.total_requests

    eval_run_resume(run=failed)
    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    assert JudgeVerdict.objects.filter(run=run).count() == 6
    # Only the items without a verdict are judged again, in both orders.
    assert fake_anthropic.total_requests - sent_before_resuming == 2 * (6 - kept)


def test_a_local_catalog_model_can_judge(
    project: Project,
    lead: User,
    base_model: BaseModel,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    version = held_out_version(project, lead, count=2)
    run = judged_run(
        project,
        lead,
        version,
        fake_openai_chat,
        JudgeSpec(kind=CandidateKind.BASE, model=base_model.key, max_new_tokens=8),
    )

    finished = executed(run)

    assert finished.status == EvalStatus.SUCCEEDED, finished.error
    verdicts = JudgeVerdict.objects.filter(run=run)
    assert verdicts.count() == 2
    # Eight tokens leave no room for a verdict line from a 135M model: what it wrote is kept.
    assert all(v.original_reply and v.swapped_reply for v in verdicts)
    assert fake_openai_chat.total_requests == 4  # the answers only; the judge ran here
    (judged,) = finished.report["judge"]
    assert judged["items"] == 2


def test_a_judge_that_is_not_in_the_catalog_is_refused_naming_the_field(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    with pytest.raises(ApplicationError) as refused:
        eval_run_create(
            project=project,
            dataset_version=version,
            split=EvalSplit.ALL,
            candidates=[openai_spec(fake_openai_chat), openai_spec(fake_openai_chat)],
            user=lead,
            judge=JudgeSpec(kind=CandidateKind.BASE, model="no-such-model"),
        )
    assert refused.value.extra["field"] == "judge.model"
    assert not EvalRun.objects.exists()


def test_a_run_resumed_by_hand_gets_its_worker_deaths_counted_afresh(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    version = held_out_version(project, lead)
    run = run_of(project, lead, version, openai_spec(fake_openai_chat))
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    EvalRun.objects.filter(pk=run.pk).update(
        status=EvalStatus.FAILED, attempts=3, error="gave up after 3 attempts"
    )
    run.refresh_from_db()
    eval_run_resume(run=run)
    # The next worker claims it (attempt 4) and dies.
    EvalRun.objects.filter(pk=run.pk).update(
        status=EvalStatus.RUNNING, attempts=4, heartbeat_at=long_ago
    )

    assert abandoned_eval_runs_reap() == [run.pk]
    run.refresh_from_db()
    assert run.status == EvalStatus.QUEUED  # one death since the resume, not four
