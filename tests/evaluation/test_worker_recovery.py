"""An evaluation survives its worker: a real Celery worker is killed (SIGKILL) while it answers a
hosted candidate's items; celery beat's reaper notices the silent heartbeat and queues the run
again, and another worker finishes it without asking again for the answers already stored. And
the page's progress bar counts the stored answers while a run is going."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from evaluation import services
from evaluation.models import CandidateKind, EvalResult, EvalRun, EvalSplit, EvalStatus
from evaluation.runner import progress
from evaluation.services import CandidateSpec, eval_run_create
from evaluation.tasks import execute_eval_run
from fakes.chat_servers import DEFAULT_API_KEY, FakeOpenAIChatServer, expected_answer
from ftportal.models import Project
from ftportal.roles import Role
from tests.conftest import start_celery_worker, stop_celery_worker, wait_until
from tests.factories import fake_endpoint

# A queue only the worker we kill listens to, so no other worker can take the first attempt.
DOOMED_QUEUE = "eval-recovery-test"
KEY_ENV = "FTPORTAL_TEST_EVAL_RECOVERY_KEY"
# Set when this module is collected, before any worker starts: every worker of the session
# inherits the key, the session's own worker included, which also listens on "inference" and
# may be the one that takes the resumed run.
os.environ.setdefault(KEY_ENV, DEFAULT_API_KEY)
ITEM_COUNT = 30
KILL_AFTER_RESULTS = 8
MAX_IN_FLIGHT = 2
RUN_TIMEOUT_S = 240


def questions(count: int) -> list[str]:
    return [f"recovery question {i} about refunds" for i in range(count)]


def right_for_the_fake(position: int) -> bool:
    """The fakes echo the question: items whose reference is that echo are answered right."""
    return position % 3 == 0


def recovery_version(project: Project, user: User, count: int) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name="recovery held-out")
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=ExampleStatus.APPROVED,
            messages=[
                {"role": "user", "content": question},
                {
                    "role": "assistant",
                    "content": expected_answer(question) if right_for_the_fake(i) else "refund",
                },
            ],
        )
        for i, question in enumerate(questions(count))
    )
    return dataset_version_freeze(dataset=dataset, user=user, validation_fraction=0.2)


def hosted_spec(base_url: str, label: str = "") -> CandidateSpec:
    return CandidateSpec(
        kind=CandidateKind.OPENAI_COMPATIBLE,
        api_model="gpt-4o-mini",
        endpoint=fake_endpoint(base_url, secret_env=KEY_ENV),
        input_usd_per_million_tokens=Decimal("0.30"),
        output_usd_per_million_tokens=Decimal("1.20"),
        label=label,
    )


def created_without_dispatch(
    monkeypatch: pytest.MonkeyPatch,
    project: Project,
    user: User,
    version: DatasetVersion,
    *specs: CandidateSpec,
) -> EvalRun:
    """eval_run_create queues the run on "inference" when it commits; here nothing is sent, so
    the test decides which worker gets it."""
    with monkeypatch.context() as patched:
        patched.setattr(services, "eval_run_dispatch", lambda run: None)
        return eval_run_create(
            project=project,
            dataset_version=version,
            split=EvalSplit.ALL,
            candidates=list(specs),
            user=user,
            max_new_tokens=16,
        )


def refreshed(run: EvalRun) -> EvalRun:
    run.refresh_from_db()
    return run


def stored_items(run: EvalRun) -> set[str]:
    """The question of every item that has a stored answer."""
    rows = EvalResult.objects.filter(candidate__run=run).values_list("item__messages", flat=True)
    return {messages[0]["content"] for messages in rows}


def progress_bar(client: Client, run: EvalRun) -> tuple[int, int]:
    """(value, max) of the evaluation page's progress bar."""
    page = client.get(reverse("eval_detail", args=[run.project_id, run.pk]))
    assert page.status_code == 200
    tag = re.search(r'<progress id="eval-progress"[^>]*>', page.content.decode())
    assert tag is not None, "the page shows no progress bar"
    value = re.search(r'value="(\d+)"', tag.group(0))
    maximum = re.search(r'max="(\d+)"', tag.group(0))
    assert value is not None and maximum is not None, tag.group(0)
    return int(value.group(1)), int(maximum.group(1))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_is_noticed_and_the_evaluation_resumes_without_asking_again(
    project: Project,
    make_member: Callable[[Role], User],
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    tmp_path: Path,
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = recovery_version(project, lead, ITEM_COUNT)
    worker_env = {
        KEY_ENV: DEFAULT_API_KEY,
        "FTPORTAL_EVAL_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "FTPORTAL_HEARTBEAT_SECONDS": "0.5",
    }
    # Slow answers, two at a time: the whole set takes several seconds, time to kill mid-way.
    with FakeOpenAIChatServer(response_delay=0.5) as fake:
        run = created_without_dispatch(
            monkeypatch, project, lead, version, hosted_spec(fake.base_url)
        )
        doomed_log = tmp_path / "doomed.log"
        doomed = start_celery_worker(doomed_log, queues=DOOMED_QUEUE, extra_env=worker_env)
        try:
            execute_eval_run.apply_async((run.pk,), queue=DOOMED_QUEUE)
            wait_until(
                lambda: len(stored_items(run)) >= KILL_AFTER_RESULTS,
                timeout=RUN_TIMEOUT_S,
                what=f"{KILL_AFTER_RESULTS} stored answers",
            )
            # --pool=solo: the task, its heartbeat and its request threads are this process.
            os.kill(doomed.pid, signal.SIGKILL)  # no clean shutdown, no chance to report
            doomed.wait(timeout=10)
        finally:
            stop_celery_worker(doomed, doomed_log)
        stored_before = stored_items(run)
        requests_before = Counter(fake.requests_by_item)
        in_flight_seen_before = fake.max_in_flight_seen
        assert refreshed(run).status == EvalStatus.RUNNING and run.attempts == 1
        killed_worker = run.worker
        assert KILL_AFTER_RESULTS <= len(stored_before) < ITEM_COUNT, len(stored_before)
        assert in_flight_seen_before <= MAX_IN_FLIGHT
        # The dead run's page still counts what it stored.
        client.force_login(lead)
        assert progress(run) == (len(stored_before), ITEM_COUNT)
        assert progress_bar(client, run) == (len(stored_before), ITEM_COUNT)

        # A second worker with beat inside: the reaper runs every second and calls a run whose
        # heartbeat is 5 s old abandoned; it queues the run on "inference" again, which this
        # worker also takes.
        rescuer_log = tmp_path / "rescuer.log"
        rescuer = start_celery_worker(
            rescuer_log,
            queues=f"{DOOMED_QUEUE},default,inference",
            private_broker=True,
            extra_args=("-B", f"--schedule={tmp_path / 'beat-schedule'}"),
            extra_env={
                **worker_env,
                "FTPORTAL_REAPER_SECONDS": "1",
                "FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS": "5",
            },
        )
        try:
            wait_until(
                lambda: refreshed(run).status in (EvalStatus.SUCCEEDED, EvalStatus.FAILED),
                timeout=RUN_TIMEOUT_S,
                what="the resumed evaluation",
            )
        finally:
            stop_celery_worker(rescuer, rescuer_log)
        requests_after = Counter(fake.requests_by_item)
        answers_after = Counter(fake.answers_by_item)

    assert run.status == EvalStatus.SUCCEEDED, run.error
    # A second claim needs the run back in "queued", which only the reaper does for a run
    # left "running"; the rescuer's private broker keeps the session's worker (its heartbeat
    # slower than this test's timeout) from taking the requeued run and being reaped in turn.
    assert run.attempts == 2
    assert run.worker != killed_worker
    all_questions = set(questions(ITEM_COUNT))
    # Every item has exactly one answer (the constraint allows no second one).
    results = EvalResult.objects.filter(candidate__run=run)
    assert results.count() == ITEM_COUNT
    assert stored_items(run) == all_questions
    # An answer stored before the kill was never asked for again...
    for question in stored_before:
        assert requests_after[question] == requests_before[question] == 1, question
        assert answers_after[question] == 1, question
    # ...and every other item was asked once by the resumed attempt: those in flight when the
    # worker died twice in all, the rest once.
    for question in all_questions - stored_before:
        assert requests_after[question] == requests_before[question] + 1, question
    assert set(requests_after) == all_questions
    # The summary covers all 30 answers, the echo being right on every third item.
    candidate = run.candidates.get()
    assert candidate.example_count == ITEM_COUNT and candidate.failed_count == 0
    right = sum(right_for_the_fake(i) for i in range(ITEM_COUNT))
    assert candidate.metrics["examples"] == ITEM_COUNT
    assert candidate.metrics["means"]["exact_match"] == pytest.approx(right / ITEM_COUNT)
    assert run.report["primary_metric"] == "exact_match"
    assert "exact_match" in run.report["metrics"]
    assert candidate.generation_seconds is not None and candidate.generation_seconds > 0
    assert progress(run) == (ITEM_COUNT, ITEM_COUNT)


@pytest.mark.django_db
def test_the_progress_bar_counts_the_stored_answers_of_a_running_evaluation(
    project: Project,
    make_member: Callable[[Role], User],
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    lead = make_member(Role.ML_LEAD)
    reviewer = make_member(Role.REVIEWER)
    version = recovery_version(project, lead, 10)
    run = created_without_dispatch(
        monkeypatch,
        project,
        lead,
        version,
        hosted_spec("http://127.0.0.1:9/v1", label="first"),
        hosted_spec("http://127.0.0.1:9/v1", label="second"),
    )
    EvalRun.objects.filter(pk=run.pk).update(status=EvalStatus.RUNNING, attempts=1)
    first, second = run.candidates.order_by("position")
    items = list(version.items.order_by("position"))
    EvalResult.objects.bulk_create(
        [EvalResult(candidate=first, item=item, output="x") for item in items[:6]]
        + [EvalResult(candidate=second, item=item, output="x") for item in items[:1]]
    )
    client.force_login(reviewer)

    # Two candidates over ten items: twenty answers to store, seven so far.
    assert progress(refreshed(run)) == (7, 20)
    assert progress_bar(client, run) == (7, 20)
    page = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    assert "7 of 20 answers" in page

    EvalResult.objects.bulk_create(
        EvalResult(candidate=second, item=item, output="x") for item in items[1:4]
    )
    assert progress(run) == (10, 20)
    assert progress_bar(client, run) == (10, 20)
