"""Where a worker's batches run their examples' common start once a row, a job's speed in
tokens a second depends on how much its data shares. The launch estimate learns the speed per
token the model ran and predicts, from the counted tokens, how many of a new version's tokens
its model will run: the same batches the trainer makes, laid out by the same arithmetic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import DatasetVersion, Split
from datasets.quality.services import counter_or_estimate
from datasets.quality.tokens import (
    count_conversations,
    local_counter,
    shared_start_tokens,
    tiktoken_counter,
)
from ftportal.models import Project
from providers.base import Conversation, TrainingConfig
from providers.batching import epoch_batch_order, length_sorted_batches
from tests.factories import finished_job, frozen_version, serving_the_training_queue
from training.estimates import (
    ComputedShares,
    JobSpeeds,
    computed_shares,
    launch_estimate,
)
from training.hyperparameters import config_for, training_config_from

REPO = Path(__file__).resolve().parents[2]
DEMO_FILE = REPO / "config" / "demo" / "support_triage.jsonl"
TRAINING_MACHINE = "trainer-b"


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from providers.local.weights import ensure_base_model

    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


def demo_conversations() -> list[Conversation]:
    return [json.loads(line)["messages"] for line in DEMO_FILE.read_text().splitlines()]


def without_system(conversations: list[Conversation]) -> list[Conversation]:
    return [[m for m in c if m["role"] != "system"] for c in conversations]


def own_system_prompts(conversations: list[Conversation]) -> list[Conversation]:
    """Each conversation with a system prompt of its own, so no two start alike."""
    return [
        [{"role": "system", "content": f"Case {i}: triage this ticket."}, *c[1:]]
        for i, c in enumerate(conversations)
    ]


def test_the_common_start_is_the_alike_leading_messages_counted_as_conversations_are() -> None:
    counter = tiktoken_counter("o200k_base")
    system = {"role": "system", "content": "You triage support tickets. Answer in JSON."}
    first = [system, {"role": "user", "content": "Charged twice"}]
    second = [system, {"role": "user", "content": "App crashes"}]
    counted: dict[str, int] = {}
    # OpenAI's format adds its tokens once a conversation at the end: not part of the start.
    assert counter.template.per_conversation == 3
    alone = int(count_conversations([[system]], counter).total[0]) - 3
    assert shared_start_tokens([first, second], counter, counted=counted) == alone > 10
    assert list(counted.values()) == [alone]
    # A user message alike in every conversation is shared too; a reply never is.
    user = {"role": "user", "content": "Same question"}
    reply = {"role": "assistant", "content": "yes"}
    both = [[system, user, reply], [system, user, reply]]
    assert shared_start_tokens(both, counter, counted=counted) == (
        int(count_conversations([[system, user]], counter).total[0]) - 3
    )
    # Texts that open with the same words share those words (whole words only).
    subjects = [[system, {"role": "user", "content": f"Subject: {t}"}] for t in ("Sea", "Sun")]
    assert shared_start_tokens(subjects, counter, counted=counted) == alone + int(
        counter.lengths(["Subject:"])[0]
    )
    other = {"role": "system", "content": "Something else entirely."}
    assert shared_start_tokens([first, [other, *second[1:]]], counter, counted=counted) == 0
    assert shared_start_tokens([first, "not a conversation"], counter, counted=counted) == 0


def test_a_template_that_inserts_a_system_prompt_starts_conversations_without_one_alike(
    base_model_dir: Path,
) -> None:
    counter = local_counter(base_model_dir)
    assert counter.template.implicit_system > 8  # SmolLM2's default system prompt
    users = [[{"role": "user", "content": text}] for text in ("Charged twice", "App crashes")]
    counted: dict[str, int] = {}
    # The default system prompt, then the user header both turns open with.
    assert counter.template.per_header["user"] == 3  # <|im_start|>, "user", "\n"
    expected = counter.template.implicit_system + 3
    assert shared_start_tokens(users, counter, counted=counted) == expected
    with_own = [[{"role": "system", "content": "Triage."}, *users[0]], users[1]]
    assert shared_start_tokens(with_own, counter, counted=counted) == 0


def trainers_shares(
    conversations: list[Conversation],
    validation: list[Conversation],
    base_model_dir: Path,
    config: TrainingConfig,
) -> ComputedShares:
    """The share of tokens the trainer's model runs: its tokenizer, its batches, its layout."""
    from providers.local.encoding import collate_sharing_prefix, encode_for_training
    from providers.local.loading import load_tokenizer

    tokenizer = load_tokenizer(base_model_dir)

    def share(examples: list[Conversation], *, training: bool) -> float:
        encoded = [encode_for_training(tokenizer, c, config.max_seq_len) for c in examples]
        lengths = [len(example.input_ids) for example in encoded]
        if training:
            batches = epoch_batch_order(lengths, config.batch_size, config.seed, 0)
        else:
            batches = length_sorted_batches(lengths, config.batch_size)
        ran = 0
        for indices in batches:
            batch = [encoded[i] for i in indices]
            laid_out = collate_sharing_prefix(batch, 0, "cpu")
            ran += laid_out.computed_tokens or sum(lengths[i] for i in indices)
        return ran / sum(lengths)

    return ComputedShares(
        training=share(conversations, training=True),
        validation=share(validation, training=False),
    )


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda c: c, id="one system prompt"),
        pytest.param(without_system, id="the template's default system prompt"),
        pytest.param(own_system_prompts, id="a system prompt each"),
    ],
)
def test_the_estimated_share_of_tokens_run_is_what_the_trainers_batches_run(
    base_model_dir: Path, variant
) -> None:
    conversations = variant(demo_conversations())
    train, validation = conversations[:116], conversations[116:]
    config = TrainingConfig()
    counter = local_counter(base_model_dir)

    estimated = computed_shares(train=train, validation=validation, counter=counter, config=config)
    actual = trainers_shares(train, validation, base_model_dir, config)

    # Equal on the demo in all three (0.588, 0.756 and 1.0 of the training tokens); counts
    # can order a batch's examples a little differently, or miss a token that a word and the
    # next text share, so within a point.
    assert estimated.training == pytest.approx(actual.training, abs=0.01)
    assert estimated.validation == pytest.approx(actual.validation, abs=0.01)
    if variant is own_system_prompts:
        assert estimated == ComputedShares(1.0, 1.0) and actual == ComputedShares(1.0, 1.0)
    else:
        assert actual.training < 0.9  # so an estimate that ignored sharing would be off


def test_the_speeds_event_reads_back_how_the_batches_were_laid_out() -> None:
    metrics = {
        "tokens_per_second": 240.0,
        "trained_tokens": 1000.0,
        "computed_tokens": 650.0,
        "validation_passes": 2.0,
        "validation_seconds": 1.0,
        "validation_tokens": 300.0,
        "validation_computed_tokens": 210.0,
        "shares_prefix": 1.0,
    }
    speeds = JobSpeeds.from_metrics(metrics)
    assert (speeds.shares_prefix, speeds.training_computed_share) == (True, 0.65)
    assert speeds.validation_computed_share == pytest.approx(0.7)
    assert JobSpeeds.from_text(speeds.text()) == speeds
    # The model ran 0.65 of 240 tokens a second: 156.
    assert 1 / speeds.training_token_seconds() == pytest.approx(156.0)
    packed = JobSpeeds.from_metrics(
        {
            **metrics,
            "shares_prefix": 0.0,
            "computed_tokens": 1000.0,
            "validation_computed_tokens": 300.0,
        }
    )
    assert "not sharing" in packed.text() and JobSpeeds.from_text(packed.text()) == packed
    before = JobSpeeds.from_metrics({"tokens_per_second": 240.0})
    assert before.shares_prefix is None and JobSpeeds.from_text(before.text()) == before


def restarted_without_shared_start(version: DatasetVersion) -> None:
    """Gives every item a system prompt of its own."""
    for item in version.items.all():
        messages = [
            {"role": "system", "content": f"Case {item.pk}: triage this ticket."},
            *item.messages[1:],
        ]
        type(item).objects.filter(pk=item.pk).update(messages=messages)


@pytest.mark.django_db
def test_an_estimate_after_a_job_that_shared_its_start_counts_the_tokens_this_version_runs(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    serving_the_training_queue(TRAINING_MACHINE)
    shared = frozen_version(project, lead, count=100)
    # A job that ran half of its 200 tokens a second: its model ran 100 a second.
    speeds = JobSpeeds(200.0, 400.0, 4, 0.2, 3, 2.0, True, 0.5, 0.6)
    finished_job(
        shared, lead, base_model, machine=TRAINING_MACHINE, speeds=speeds, tokens_per_second=200.0
    )
    stored = config_for(base_model.provider, {})
    config = training_config_from(stored)
    counter, _ = counter_or_estimate(base_model)

    def train_and_validation(version: DatasetVersion) -> tuple[list[object], list[object]]:
        items = version.items.order_by("position")
        return (
            list(items.filter(split=Split.TRAIN).values_list("messages", flat=True)),
            list(items.filter(split=Split.VALIDATION).values_list("messages", flat=True)),
        )

    estimate = launch_estimate(version=shared, base_model=base_model, hyperparameters=stored)
    train, validation = train_and_validation(shared)
    shares = computed_shares(train=train, validation=validation, counter=counter, config=config)
    assert shares.training < 0.9
    assert estimate.time is not None
    assert estimate.time.training_seconds == pytest.approx(
        estimate.training_tokens * shares.training / 100.0
    )
    validation_tokens = int(count_conversations(validation, counter).total.sum())
    assert estimate.time.validation_seconds == pytest.approx(
        estimate.time.validation_passes * validation_tokens * shares.validation / (400.0 * 0.6)
    )
    assert "run by the model" in estimate.time.basis
    assert f"runs {shares.training:.0%} of its training tokens" in estimate.time.basis

    # Data that shares nothing runs every token: at the speed the model ran, not the 200 a
    # second the job with a shared start measured (an estimate half the time it takes).
    other = frozen_version(project, lead, count=100)
    restarted_without_shared_start(other)
    estimate = launch_estimate(version=other, base_model=base_model, hyperparameters=stored)
    assert estimate.time is not None
    assert estimate.time.training_seconds == pytest.approx(estimate.training_tokens / 100.0)
    assert "runs 100% of its training tokens" in estimate.time.basis


@pytest.mark.django_db
def test_a_worker_that_does_not_share_starts_is_estimated_as_before(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    serving_the_training_queue(TRAINING_MACHINE)
    version = frozen_version(project, lead, count=100)
    speeds = JobSpeeds(200.0, 400.0, 4, 0.2, 3, 2.0, False)
    finished_job(
        version, lead, base_model, machine=TRAINING_MACHINE, speeds=speeds, tokens_per_second=200.0
    )
    estimate = launch_estimate(
        version=version,
        base_model=base_model,
        hyperparameters=config_for(base_model.provider, {}),
    )
    assert estimate.time is not None
    assert estimate.time.training_seconds == pytest.approx(estimate.training_tokens / 200.0)
    assert "share their start" not in estimate.time.basis
