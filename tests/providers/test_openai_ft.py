"""OpenAIFineTuner with the real openai SDK over real HTTP, against the fake OpenAI server."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from fakes.openai_server import FakeOpenAIServer
from fakes.openai_server import fake_openai_fixture as fake_openai_fixture  # `fake_openai`
from providers.base import (
    Conversation,
    HostedJobState,
    HostedJobStatus,
    HostedTrainingConfig,
    ProviderError,
    TransientProviderError,
)
from providers.openai_ft import OpenAIFineTuner

BASE_MODEL = "gpt-4o-mini-2024-07-18"
MAX_POLLS = 20


def ticket(text: str, label: str) -> Conversation:
    return [
        {"role": "system", "content": "Label the support ticket."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]


TRAIN = [
    ticket("I was charged twice this month.", "billing"),
    ticket("The app crashes when I open settings.", "bug"),
    ticket("Can you add a dark mode?", "feature"),
    ticket("How do I reset my password?", "account"),
]
VALIDATION = [ticket("My invoice shows the wrong VAT number.", "billing")]
# 4 examples in batches of 2 for 2 epochs: 4 steps, a checkpoint at the end of each epoch.
SMALL_CONFIG = HostedTrainingConfig(epochs=2, batch_size=2, suffix="triage")


def words_in(conversations: list[Conversation]) -> int:
    return sum(len(message["content"].split()) for c in conversations for message in c)


@pytest.fixture
def tuner(fake_openai: FakeOpenAIServer) -> OpenAIFineTuner:
    return OpenAIFineTuner(api_key=fake_openai.api_key, base_url=fake_openai.base_url)


def submit(
    tuner: OpenAIFineTuner,
    *,
    key: str = "submission-1",
    train: list[Conversation] = TRAIN,
    validation: list[Conversation] | None = None,
    config: HostedTrainingConfig = SMALL_CONFIG,
    base_model: str = BASE_MODEL,
) -> str:
    return tuner.submit(
        train=train,
        validation=validation or [],
        base_model=base_model,
        config=config,
        submission_key=key,
    )


def poll_until_finished(tuner: OpenAIFineTuner, job_id: str) -> list[HostedJobState]:
    """Every state seen, each poll asking only for events after the last one seen."""
    states: list[HostedJobState] = []
    last_event: str | None = None
    for _ in range(MAX_POLLS):
        state = tuner.poll(job_id, after_event=last_event)
        states.append(state)
        if state.events:
            last_event = state.events[-1].provider_id
        if state.status in (
            HostedJobStatus.SUCCEEDED,
            HostedJobStatus.FAILED,
            HostedJobStatus.CANCELLED,
        ):
            return states
    raise AssertionError(f"job {job_id} did not finish in {MAX_POLLS} polls")


# -- the happy path ------------------------------------------------------------------------


def test_a_job_goes_from_validating_to_succeeded_with_metrics_checkpoints_and_model(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    job_id = submit(tuner, validation=VALIDATION)
    states = poll_until_finished(tuner, job_id)

    assert [s.status for s in states] == [
        HostedJobStatus.VALIDATING,
        HostedJobStatus.QUEUED,
        HostedJobStatus.RUNNING,
        HostedJobStatus.SUCCEEDED,
    ]
    final = states[-1]
    assert final.fine_tuned_model is not None
    assert final.fine_tuned_model.startswith(f"ft:{BASE_MODEL}:triage:")
    assert final.trained_tokens == words_in(TRAIN) * SMALL_CONFIG.epochs
    assert final.error == ""
    assert states[2].estimated_finish is not None and final.estimated_finish is None

    metrics = [metric for state in states for metric in state.metrics]
    assert [m.step for m in metrics] == [1, 2, 3, 4]
    assert all(m.train_loss is not None and m.val_loss is not None for m in metrics)
    assert metrics[-1].train_loss is not None and metrics[0].train_loss is not None
    assert metrics[-1].train_loss < metrics[0].train_loss

    listed = fake_openai.jobs[job_id].checkpoints
    assert [c.step for c in final.checkpoints] == [2, 4]
    assert [c.model_id for c in final.checkpoints] == [
        c["fine_tuned_model_checkpoint"] for c in listed
    ]
    assert final.checkpoints[-1].model_id.startswith(final.fine_tuned_model)
    # Checkpoints are judged on the full validation set when the provider measured it.
    assert final.checkpoints[-1].val_loss == listed[-1]["metrics"]["full_valid_loss"]


def test_successive_polls_see_every_event_once_oldest_first(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.max_page_size = 2  # several pages per poll
    job_id = submit(tuner)
    states = poll_until_finished(tuner, job_id)

    seen = [event.provider_id for state in states for event in state.events]
    assert seen == [event["id"] for event in fake_openai.jobs[job_id].events]
    assert states[-1].events[-1].message == "The job has successfully completed."


def test_poll_returns_only_the_events_after_the_given_one(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.max_page_size = 2
    job_id = submit(tuner)
    for _ in range(3):
        tuner.poll(job_id)  # now running, steps 1 and 2 done
    history = fake_openai.jobs[job_id].events
    seen = next(i for i, event in enumerate(history) if event["data"].get("step") == 1) + 1

    state = tuner.poll(job_id, after_event=history[seen - 1]["id"])

    expected = [event["id"] for event in fake_openai.jobs[job_id].events[seen:]]
    assert len(expected) > 2
    assert [event.provider_id for event in state.events] == expected
    assert [metric.step for metric in state.metrics] == [2, 3, 4]


# -- what is sent --------------------------------------------------------------------------


def test_hyperparameters_suffix_seed_and_key_are_sent_as_given(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    config = HostedTrainingConfig(
        epochs=4, batch_size=8, learning_rate_multiplier=0.5, seed=7, suffix="triage-v2"
    )
    job_id = submit(tuner, key="run-42", config=config)

    (create,) = fake_openai.job_create_requests
    assert create.json["model"] == BASE_MODEL
    assert create.json["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 0.5}
        },
    }
    assert create.json["seed"] == 7
    assert create.json["suffix"] == "triage-v2"
    assert create.json["metadata"] == {"ftportal_submission": "run-42"}
    assert create.headers["idempotency-key"] == "run-42"
    assert create.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert fake_openai.jobs[job_id].seed == 7


def test_hyperparameters_left_as_none_are_left_to_the_provider(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    job_id = submit(tuner, config=HostedTrainingConfig(epochs=2))

    (create,) = fake_openai.job_create_requests
    assert create.json["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2}
    assert "seed" not in create.json
    assert "suffix" not in create.json
    # The provider resolved "auto" itself.
    assert fake_openai.jobs[job_id].batch_size == 1
    assert fake_openai.jobs[job_id].learning_rate_multiplier == 2.0


def test_training_file_is_chat_jsonl_for_fine_tuning_keeping_message_weights(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    weighted: Conversation = [
        {"role": "user", "content": "Où est ma facture ?"},
        {"role": "assistant", "content": "account", "weight": 0},  # type: ignore[dict-item]
        {"role": "user", "content": "Really?"},
        {"role": "assistant", "content": "billing", "weight": 1},  # type: ignore[dict-item]
    ]
    submit(tuner, key="weights", train=[weighted, TRAIN[0]])

    (uploaded,) = fake_openai.files.values()
    assert uploaded.purpose == "fine-tune"
    assert "weights" in uploaded.filename and uploaded.filename.endswith(".jsonl")
    lines = [json.loads(line) for line in uploaded.content.decode("utf-8").splitlines()]
    assert lines == [{"messages": weighted}, {"messages": TRAIN[0]}]


@pytest.mark.parametrize(
    ("validation", "files_expected"), [([], 1), (VALIDATION, 2)], ids=["none", "some"]
)
def test_a_validation_file_is_uploaded_only_when_there_is_validation_data(
    tuner: OpenAIFineTuner,
    fake_openai: FakeOpenAIServer,
    validation: list[Conversation],
    files_expected: int,
) -> None:
    job_id = submit(tuner, key="val-check", validation=validation)

    assert fake_openai.files_created == files_expected
    (create,) = fake_openai.job_create_requests
    if validation:
        validation_file = fake_openai.files[create.json["validation_file"]]
        assert "val-check" in validation_file.filename
        assert validation_file.content.decode().count("\n") == len(VALIDATION)
        assert fake_openai.jobs[job_id].validation_file == validation_file.id
    else:
        assert "validation_file" not in create.json


def test_an_empty_training_set_is_refused_before_any_request(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    with pytest.raises(ProviderError, match="training set is empty") as raised:
        submit(tuner, train=[])
    assert not isinstance(raised.value, TransientProviderError)
    assert fake_openai.requests == []


def test_a_compatible_service_under_its_own_base_path_works() -> None:
    with FakeOpenAIServer(path_prefix="/gateway/openai/v1", api_key="gw-key") as gateway:
        tuner = OpenAIFineTuner(
            api_key="gw-key", base_url=gateway.base_url, organization="org-portal"
        )
        job_id = submit(tuner)
        state = tuner.poll(job_id)

    assert state.status is HostedJobStatus.VALIDATING
    assert {r.path for r in gateway.requests} >= {"/files", "/fine_tuning/jobs"}
    assert all(r.headers["openai-organization"] == "org-portal" for r in gateway.requests)


# -- failures reported by the job ----------------------------------------------------------


def test_an_invalid_training_file_fails_the_job_with_the_providers_message(
    tuner: OpenAIFineTuner,
) -> None:
    no_answer: Conversation = [{"role": "user", "content": "Hello?"}]
    job_id = submit(tuner, train=[*TRAIN, no_answer])
    states = poll_until_finished(tuner, job_id)

    final = states[-1]
    assert final.status is HostedJobStatus.FAILED
    assert "Line 5 has no assistant message" in final.error
    assert "code: invalid_training_file" in final.error
    assert "param: training_file" in final.error
    assert final.fine_tuned_model is None and final.checkpoints == []
    assert final.events[-1].level == "error"


def test_a_job_failing_during_training_reports_the_error_and_what_it_had(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.fail_training_at_step(3, message="Training diverged.", code="training_diverged")
    job_id = submit(tuner)
    states = poll_until_finished(tuner, job_id)

    final = states[-1]
    assert final.status is HostedJobStatus.FAILED
    assert final.error == "Training diverged. (code: training_diverged)"
    assert [c.step for c in final.checkpoints] == [2]
    assert final.trained_tokens is None


# -- errors of the API itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_seconds"),
    [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5)],
    ids=["seconds", "milliseconds"],
)
def test_rate_limiting_is_transient_with_the_providers_retry_after(
    tuner: OpenAIFineTuner,
    fake_openai: FakeOpenAIServer,
    headers: dict[str, str],
    expected_seconds: float,
) -> None:
    job_id = submit(tuner)
    fake_openai.fail_next_requests(1, status=429, headers=headers, message="Slow down.")

    with pytest.raises(TransientProviderError) as raised:
        tuner.poll(job_id)

    assert raised.value.retry_after == expected_seconds
    assert f"checking fine-tuning job {job_id}: Slow down." in str(raised.value)
    assert "429" in str(raised.value)
    assert tuner.poll(job_id).status is HostedJobStatus.VALIDATING  # only one was refused


def test_running_out_of_credit_is_permanent_though_it_comes_as_a_429(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.fail_next_requests(
        1,
        status=429,
        code="insufficient_quota",
        message="You exceeded your current quota, please check your plan and billing details.",
    )

    with pytest.raises(ProviderError, match="exceeded your current quota") as raised:
        submit(tuner)
    assert not isinstance(raised.value, TransientProviderError)


def test_a_retry_after_given_as_an_http_date_becomes_seconds_from_now(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    fake_openai.fail_next_requests(1, status=429, headers={"Retry-After": in_a_minute})

    with pytest.raises(TransientProviderError) as raised:
        submit(tuner)

    assert raised.value.retry_after is not None
    assert 57 <= raised.value.retry_after <= 60


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
def test_server_errors_and_lock_conflicts_are_transient(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer, status: int
) -> None:
    fake_openai.fail_next_requests(2, status=status)

    for _ in range(2):
        with pytest.raises(TransientProviderError, match=f"HTTP {status}") as raised:
            submit(tuner)
        assert raised.value.retry_after is None
    assert fake_openai.jobs_created == 0

    submit(tuner)
    assert fake_openai.jobs_created == 1


def test_a_request_slower_than_the_timeout_is_transient(fake_openai: FakeOpenAIServer) -> None:
    impatient = OpenAIFineTuner(
        api_key=fake_openai.api_key, base_url=fake_openai.base_url, timeout=0.2
    )
    fake_openai.stall_next_requests(1, seconds=2.0)

    started = time.monotonic()
    with pytest.raises(TransientProviderError, match="did not answer in time"):
        submit(impatient)
    assert time.monotonic() - started < 1.5  # the SDK did not retry on its own
    assert fake_openai.jobs_created == 0


def test_an_unreachable_service_is_transient() -> None:
    with FakeOpenAIServer() as fake:
        base_url = fake.base_url
    tuner = OpenAIFineTuner(api_key="sk-any", base_url=base_url)

    with pytest.raises(TransientProviderError, match="could not reach the provider"):
        tuner.poll("ftjob-1")


def test_a_wrong_api_key_is_permanent_and_says_so(fake_openai: FakeOpenAIServer) -> None:
    wrong = OpenAIFineTuner(api_key="sk-wrong", base_url=fake_openai.base_url)

    with pytest.raises(ProviderError) as raised:
        submit(wrong)

    assert not isinstance(raised.value, TransientProviderError)
    message = str(raised.value)
    assert message.startswith("looking for a job already submitted with this key: ")
    assert "Incorrect API key provided" in message and "code: invalid_api_key" in message
    assert "HTTP 401" in message


def test_a_refused_request_is_permanent_with_the_providers_message_and_param(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    with pytest.raises(ProviderError) as raised:
        submit(tuner, base_model="gpt-nonexistent")

    assert not isinstance(raised.value, TransientProviderError)
    assert str(raised.value) == (
        "creating the fine-tuning job: Model gpt-nonexistent is not available for fine-tuning"
        " or does not exist. (code: model_not_available, param: model) (HTTP 400)"
    )
    assert fake_openai.jobs_created == 0


def test_polling_an_unknown_job_is_permanent(tuner: OpenAIFineTuner) -> None:
    with pytest.raises(ProviderError, match="Could not find fine-tuning job ftjob-gone") as raised:
        tuner.poll("ftjob-gone")
    assert not isinstance(raised.value, TransientProviderError)
    assert "HTTP 404" in str(raised.value)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_stops_the_job_and_repeating_it_is_harmless(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    job_id = submit(tuner)
    for _ in range(3):
        tuner.poll(job_id)

    tuner.cancel(job_id)
    tuner.cancel(job_id)  # a retried task whose first cancel got through

    state = tuner.poll(job_id)
    assert state.status is HostedJobStatus.CANCELLED
    assert state.fine_tuned_model is None
    assert fake_openai.jobs[job_id].step == 2  # it stopped training
    cancels = [r for r in fake_openai.requests if r.path.endswith("/cancel")]
    assert len(cancels) == 2


def test_cancelling_a_finished_job_is_refused(tuner: OpenAIFineTuner) -> None:
    job_id = submit(tuner)
    poll_until_finished(tuner, job_id)

    with pytest.raises(ProviderError, match="already succeeded") as raised:
        tuner.cancel(job_id)
    assert not isinstance(raised.value, TransientProviderError)


# -- one paid job per submission -----------------------------------------------------------


def test_submitting_twice_with_one_key_creates_one_job(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    first = submit(tuner, key="once")
    second = submit(tuner, key="once")
    other = submit(tuner, key="another")

    assert second == first and other != first
    assert fake_openai.jobs_created == 2
    assert len(fake_openai.job_create_requests) == 2
    assert fake_openai.files_created == 2  # the repeat uploaded nothing


def test_a_retry_after_the_create_response_was_lost_finds_the_job(
    fake_openai: FakeOpenAIServer,
) -> None:
    dying_worker = OpenAIFineTuner(api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    fake_openai.drop_response_after_next_job_create()
    with pytest.raises(TransientProviderError, match="creating the fine-tuning job"):
        submit(dying_worker, key="lost-response")
    assert fake_openai.jobs_created == 1  # paid for, but the worker never learnt its id

    next_worker = OpenAIFineTuner(api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    job_id = submit(next_worker, key="lost-response")

    assert job_id == next(iter(fake_openai.jobs))
    assert fake_openai.jobs_created == 1
    assert len(fake_openai.job_create_requests) == 1
    assert fake_openai.files_created == 1


def test_the_job_is_found_across_pages_when_the_service_ignores_the_metadata_filter(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.filters_by_metadata = False
    fake_openai.max_page_size = 2
    original = submit(tuner, key="oldest")
    for n in range(4):
        submit(tuner, key=f"newer-{n}")

    assert submit(tuner, key="oldest") == original
    assert fake_openai.jobs_created == 5
    job_lists = [r for r in fake_openai.requests if r.method == "GET" and r.path.endswith("jobs")]
    assert any("after" in r.query for r in job_lists)  # it paged


def test_the_idempotency_key_saves_the_day_where_metadata_is_not_kept(
    tuner: OpenAIFineTuner, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.keeps_metadata = False

    first = submit(tuner, key="no-metadata")
    second = submit(tuner, key="no-metadata")

    assert second == first
    assert len(fake_openai.job_create_requests) == 2
    assert fake_openai.jobs_created == 1
