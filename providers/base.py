"""The small interface Django apps use to train and generate, whatever the provider.

Conversations are OpenAI chat-format message lists: ``[{"role": "user", "content": "..."}]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
Conversation = list[Message]
# The kinds of a dataset's answer contract that generation can be constrained to.
ConstraintKind = Literal["label_set", "json_schema", "regex"]
CONSTRAINT_KINDS: tuple[ConstraintKind, ...] = ("label_set", "json_schema", "regex")
# What a local trainer's validation passes measure (TrainingConfig.validation_metric).
ValidationMetric = Literal["loss", "label_accuracy"]
VALIDATION_METRICS: tuple[ValidationMetric, ...] = ("loss", "label_accuracy")


class ProviderError(Exception):
    """A provider could not do what was asked; the message says what and why.

    Permanent: trying the same request again would fail the same way (a file the provider
    refused, a job that failed, bad credentials). ``status_code`` is the provider's HTTP status
    when it answered with one (None otherwise).
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientProviderError(ProviderError):
    """Worth trying again later: rate limits (429), server errors (5xx), timeouts, lost
    connections. ``retry_after`` is the provider's Retry-After in seconds, when it sent one."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class TrainingCancelled(ProviderError):
    """Training stopped because the caller asked it to."""


DEFAULT_LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of a local LoRA job; defaults follow the guide (3 epochs, default
    settings otherwise)."""

    epochs: int = 3
    # Measured on the demo (bench/demo_finetune.py): 1e-3 beat 2e-4 for LoRA on a 135M model,
    # exact match 0.25 against 0.15 and validation loss 0.128 against 0.162, 3 epochs each.
    learning_rate: float = 1e-3
    batch_size: int = 8
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGET_MODULES
    max_seq_len: int = 512
    seed: int = 0
    # Cap on optimizer steps, for smoke runs; None trains all epochs.
    max_steps: int | None = None
    # Validation loss is computed every this many steps and at the end; None leaves it to
    # default_intervals, which scales it to the data (validation at most VALIDATION_SHARE of
    # the training time: every 5 steps, the old default, added 85 % to the training time of
    # the 500 short examples with a 15 % validation split).
    eval_every_steps: int | None = None
    # A resumable checkpoint (adapter, optimizer, schedule, data order) every this many steps
    # and at the end; 0 saves only the final adapter; None leaves it to default_intervals.
    checkpoint_every_steps: int | None = None
    # Stop after this many validation evaluations in a row without a new best validation loss,
    # and keep the best checkpoint as the result; None trains to the end.
    early_stopping_patience: int | None = None
    # What a validation pass measures besides the loss. "label_accuracy": the share of
    # validation conversations answered with their label when the reply is constrained to
    # validation_labels (a label-set task); the best evaluation, which early stopping keeps,
    # is then the one of highest accuracy, a lower loss breaking ties.
    validation_metric: ValidationMetric = "loss"
    # The label set for "label_accuracy": the dataset version's, filled in by the worker
    # (not a setting a lead types).
    validation_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a local job takes: one per batch, each epoch, up to max_steps."""

    steps_per_epoch: int
    total_steps: int
    epochs: int

    @property
    def capped(self) -> bool:
        """Whether max_steps ends the job before its epochs are done."""
        return self.total_steps < self.steps_per_epoch * self.epochs

    def evaluations_after(self, step: int, every: int) -> int:
        """Validation passes still to come after ``step`` when validating every ``every``
        steps: one at each multiple of it, and one at the last step when that is not one."""
        if step >= self.total_steps:
            return 0
        regular = self.total_steps // every - step // every
        return regular + (1 if self.total_steps % every else 0)

    def checkpoints(self, every: int) -> int:
        """Checkpoints saved over the whole plan with a checkpoint every ``every`` steps (0:
        none), the last step included; under early stopping each new best adds one."""
        return self.evaluations_after(0, every) if every else 0


def step_plan(example_count: int, config: TrainingConfig) -> StepPlan:
    """The steps a local job on ``example_count`` training examples takes; the trainer and
    the launch estimate both use it, so the estimate counts what the trainer will do."""
    steps_per_epoch = math.ceil(example_count / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return StepPlan(steps_per_epoch, total_steps, config.epochs)


@dataclass(frozen=True)
class LocalCosts:
    """What each part of a local job costs on one worker, in seconds: the launch estimate's
    model of a job, and what default_intervals weighs validation and checkpoints against."""

    training_token_seconds: float  # one input token through an optimizer step
    validation_token_seconds: float  # one input token through a validation pass
    save_seconds: float  # one checkpoint written (adapter, optimizer state, schedule)
    load_seconds: float  # tokenizer and base model loaded, data encoded, LoRA put on

    @property
    def validation_cost_ratio(self) -> float:
        """A validation token's cost over a training token's: a forward pass without the
        backward one and the optimizer."""
        return self.validation_token_seconds / self.training_token_seconds


# Measured with SmolLM2-135M-Instruct and the default LoRA on the 2-core development CPU, by
# the trainer's own metrics (the figures bench/estimate.py prints for each job), on the issue's
# many-label task (428 training and 76 validation examples of about 37 tokens, batch 8), with
# the machine shared (load about 6): training 41 tokens/s, a validation pass 93 tokens/s, so a
# validation token costs 0.45 of a training one (a forward pass without the backward pass and
# the optimizer); a checkpoint save 0.34 s; loading and preparing 3.1 s. default_intervals
# weighs with the ratios, which load changes little. The launch estimate uses these until a
# machine has finished jobs of its own (training.estimates), and the trainer when a config
# leaves an interval unset.
MEASURED_CPU_COSTS = LocalCosts(
    training_token_seconds=1 / 41,
    validation_token_seconds=1 / 93,
    save_seconds=0.34,
    load_seconds=3.1,
)
# When the lead leaves an interval unset: validation passes take at most this share of the
# training steps' time, checkpoint saves at most CHECKPOINT_SHARE, and a job keeps at most
# MAX_DEFAULT_CHECKPOINTS checkpoints (each holds the optimizer's state, several MB).
VALIDATION_SHARE = 0.10
CHECKPOINT_SHARE = 0.05
MAX_DEFAULT_CHECKPOINTS = 20


def default_intervals(
    config: TrainingConfig,
    *,
    train_examples: int,
    train_tokens_per_epoch: int,
    validation_tokens: int,
    costs: LocalCosts = MEASURED_CPU_COSTS,
) -> TrainingConfig:
    """``config`` with the intervals it leaves unset (None) chosen for this data; an interval
    the lead set stays as it is. The launch stores what this returns on the job, the estimate
    counts its validation passes and saves with it, and the trainer applies it (with its own
    token counts) to a config that still leaves one unset.

    Validation: as many passes as fit in VALIDATION_SHARE of the training time (the one at the
    last step always runs), evenly spaced. Checkpoints: as many as fit in CHECKPOINT_SHARE, at
    most MAX_DEFAULT_CHECKPOINTS, each on a validation step so that it has its own validation
    loss.
    """
    if config.eval_every_steps is not None and config.checkpoint_every_steps is not None:
        return config
    plan = step_plan(train_examples, config)
    if plan.total_steps == 0:
        return replace(
            config,
            eval_every_steps=config.eval_every_steps or 1,
            checkpoint_every_steps=config.checkpoint_every_steps or 1,
        )
    training_tokens = train_tokens_per_epoch * plan.total_steps / plan.steps_per_epoch
    training_seconds = training_tokens * costs.training_token_seconds
    eval_every = config.eval_every_steps
    if eval_every is None:
        if validation_tokens:
            pass_seconds = validation_tokens * costs.validation_token_seconds
            affordable = VALIDATION_SHARE * training_seconds / pass_seconds
            eval_every = _interval(plan.total_steps, affordable)
        else:
            eval_every = plan.total_steps  # nothing to validate on: the trainer skips them
    checkpoint_every = config.checkpoint_every_steps
    if checkpoint_every is None:
        affordable = CHECKPOINT_SHARE * training_seconds / costs.save_seconds
        checkpoint_every = _interval(plan.total_steps, min(MAX_DEFAULT_CHECKPOINTS, affordable))
        if validation_tokens:
            checkpoint_every = math.ceil(checkpoint_every / eval_every) * eval_every
    return replace(config, eval_every_steps=eval_every, checkpoint_every_steps=checkpoint_every)


def _interval(total_steps: int, affordable: float) -> int:
    """The shortest interval that puts at most ``affordable`` events (never fewer than the one
    at the last step) into ``total_steps`` steps: ceil(total / interval) <= affordable."""
    events = max(1, math.floor(affordable))
    return math.ceil(total_steps / events)


@dataclass(frozen=True)
class HostedTrainingConfig:
    """Hyperparameters a hosted fine-tuning API takes; None lets the provider choose ("auto")."""

    epochs: int = 3
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    seed: int | None = None
    suffix: str = ""


@dataclass(frozen=True)
class TrainingProgress:
    """One optimizer step, as the local trainer reports it."""

    step: int
    total_steps: int
    epoch: float
    train_loss: float | None = None
    val_loss: float | None = None
    # The validation label accuracy, at a validation pass that measures one.
    val_accuracy: float | None = None
    learning_rate: float | None = None
    # Non-padding tokens processed in this step, and the rate over the run so far.
    step_tokens: int = 0
    tokens_per_second: float | None = None
    seconds_left: float | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint written to disk; ``path`` holds a loadable adapter (and, for local jobs,
    what resuming needs)."""

    step: int
    path: Path
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    steps: int
    train_loss: float | None
    val_loss: float | None
    device: str
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    # The step whose adapter is in adapter_dir: the last step, or the best one when early
    # stopping kept it.
    best_step: int | None = None
    stopped_early: bool = False
    trained_tokens: int = 0
    # The validation label accuracy of the adapter in adapter_dir, when the run measured one.
    val_accuracy: float | None = None
    # The precision of the frozen base weights ("fp32", "bf16"; empty where not local).
    precision: str = ""
    # Model FLOPs of the tokens trained per second of training, over the host's measured peak
    # rate of a matrix product in that precision; None where not measured.
    model_flops_utilization: float | None = None


@dataclass(frozen=True)
class TrainingSetupReport:
    """How a local fine-tuner will train on this host, chosen by measurement, in words."""

    precision: str
    description: str


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ChatResult:
    """One answer of ``ChatModel.generate_many``. ``latency_seconds`` is what it cost here: the
    successful request of a hosted answer, a local answer's share of its batch's time.
    ``attempts`` counts every request sent for it (1 when the first one answered; a local
    model answers each conversation once)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float
    attempts: int
    # Label scoring only: the answer's probability among the labels it was ranked with.
    confidence: float | None = None

    def as_generation(self) -> Generation:
        return Generation(self.text, self.prompt_tokens, self.completion_tokens)


class ChatItemError(ProviderError):
    """Item ``index`` of a ``generate_many`` call failed for good (refused, or out of attempts).

    ``retryable`` is true when it ran out of attempts on transient errors: the whole run may
    pass later (resuming from what ``on_result`` reported), unlike a refused request.
    """

    def __init__(
        self,
        index: int,
        message: str,
        *,
        retryable: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(f"Item {index}: {message}", status_code=status_code)
        self.index = index
        self.retryable = retryable


# on_result(index of the conversation in the call, its answer)
OnResult = Callable[[int, ChatResult], None]


class FineTuner(Protocol):
    """Trains synchronously in the calling process (a Celery worker), reporting progress."""

    def train(
        self,
        *,
        train: Sequence[Conversation],
        validation: Sequence[Conversation],
        config: TrainingConfig,
        output_dir: Path,
        on_progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
        on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
        resume_from: Path | None = None,
    ) -> TrainingResult: ...


class HostedJobStatus(StrEnum):
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class HostedEvent:
    provider_id: str
    created_at: int  # unix seconds
    level: str
    message: str


@dataclass(frozen=True)
class HostedMetric:
    step: int
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class HostedCheckpoint:
    provider_id: str
    model_id: str  # what a chat call names to use this checkpoint
    step: int
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class HostedJobState:
    provider_job_id: str
    status: HostedJobStatus
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str = ""
    # Newest last; only those after the ``after_event`` given to poll().
    events: list[HostedEvent] = field(default_factory=list)
    metrics: list[HostedMetric] = field(default_factory=list)
    checkpoints: list[HostedCheckpoint] = field(default_factory=list)
    estimated_finish: int | None = None  # unix seconds


class HostedFineTuner(Protocol):
    """A fine-tuning service that trains elsewhere; the worker submits, then polls."""

    def submit(
        self,
        *,
        train: Sequence[Conversation],
        validation: Sequence[Conversation],
        base_model: str,
        config: HostedTrainingConfig,
        submission_key: str,
    ) -> str:
        """Start a job and return the provider's job id.

        Idempotent per ``submission_key``: if a job with that key already exists at the
        provider (a worker died after creating it), its id is returned and nothing new is
        created, so a retried task never pays twice.
        """
        ...

    def poll(self, provider_job_id: str, *, after_event: str | None = None) -> HostedJobState: ...

    def cancel(self, provider_job_id: str) -> None: ...


@dataclass(frozen=True)
class AnswerConstraint:
    """What a constrained answer may be: one of ``labels``, a JSON document valid against
    ``schema_json``, or a text that ``pattern`` matches whole."""

    kind: ConstraintKind
    labels: tuple[str, ...] = ()
    # The schema as canonical JSON text, so that the constraint is hashable and comparable.
    schema_json: str = ""
    pattern: str = ""

    @staticmethod
    def from_contract(contract: Mapping[str, Any]) -> AnswerConstraint | None:
        """The constraint of a dataset's answer contract; None for no contract (``{}``).
        ProviderError says what is wrong with a contract it cannot use."""
        if not contract:
            return None
        kind = contract.get("kind")
        if kind == "label_set":
            return _label_set(contract.get("labels"))
        if kind == "json_schema":
            schema = contract.get("schema")
            if not isinstance(schema, dict):
                raise ProviderError("answer contract: a JSON Schema contract needs a schema object")
            return AnswerConstraint(
                kind="json_schema", schema_json=json.dumps(schema, sort_keys=True)
            )
        if kind == "regex":
            pattern = contract.get("pattern")
            if not isinstance(pattern, str) or not pattern:
                raise ProviderError(
                    "answer contract: a regular expression contract needs a pattern"
                )
            return AnswerConstraint(kind="regex", pattern=pattern)
        raise ProviderError(
            f"answer contract: unknown kind {kind!r}; expected one of {', '.join(CONSTRAINT_KINDS)}"
        )

    def describe(self) -> str:
        if self.kind == "label_set":
            return f"one of {len(self.labels)} labels"
        if self.kind == "json_schema":
            return "JSON valid against the contract's schema"
        return f"text matching /{self.pattern}/"


def _label_set(labels: object) -> AnswerConstraint:
    if not isinstance(labels, list) or not labels:
        raise ProviderError("answer contract: a label set needs a non-empty list of labels")
    for position, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise ProviderError(
                f"answer contract: label {position + 1} is {label!r}; labels are non-empty texts"
            )
    return AnswerConstraint(kind="label_set", labels=tuple(dict.fromkeys(labels)))


class ChatModel(Protocol):
    """A model that answers conversations: local weights, or a hosted API at a registered
    endpoint. Django code builds every one through ``catalog.adapters``."""

    def generate_many(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """One answer per conversation, returned in input order, and each reported as soon as
        it is in: ``on_result(index, result)`` runs in the calling thread once per answered
        item (a local model's batch of ``batch_size`` together, after the batch; a hosted
        model's answers one by one, in the order they arrive from its concurrent requests).

        ``before_batch()`` runs in the calling thread before each batch starts: before each
        of a local model's batches, and once before a hosted model sends its requests (it
        sends them all as one batch, ``max_in_flight`` at a time; ``batch_size`` does not
        apply). A caller stores what was reported there, so the answers of one batch are
        stored together, and raises there to stop: nothing more is started.

        Not idempotent: every call generates again (and a hosted one pays again). A caller
        that must not lose paid work stores each reported answer and, after a crash, calls
        again with only the conversations that have none; nothing here remembers them.

        An exception from ``on_result`` or ``before_batch`` stops the call (requests already
        sent finish) and propagates. When a hosted item fails for good, the items already
        reported stay reported, nothing new is started, and ChatItemError names the first
        failed item; a local batch that fails fails the call (ProviderError), after the
        batches before it were reported.
        ``temperature`` 0 is greedy; a local model is always greedy. With a constraint, a
        provider that can constrain its decoding writes only answers the constraint allows;
        one that cannot ignores it.
        """
        ...

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
    ) -> list[Generation]:
        """One reply per conversation, in input order, with nothing reported on the way. With
        a constraint, a provider that can constrain its decoding writes only replies the
        constraint allows; one that cannot ignores it."""
        ...

    def close(self) -> None:
        """Release what the model holds open (a hosted client's connections); a local model
        stays loaded in this process for the next one."""
        ...


class LiveAnswer(Protocol):
    """A streamed answer whose first piece of text has arrived."""

    # Set once ``pieces`` has given the last piece: the whole answer, with its usage.
    result: ChatResult | None

    def pieces(self) -> AsyncIterator[str]:
        """The answer's text as it arrives (the first piece already in); ProviderError when
        the stream breaks after it."""
        ...

    def close(self) -> None:
        """Stop reading before the end (the caller went away)."""
        ...


@runtime_checkable
class AsyncChatModel(Protocol):
    """A ChatModel that can also answer one conversation on an event loop, without a thread:
    the gateway's path for backends reached over HTTP (``serving.gateway``). Same answers and
    errors as ``generate_many`` for one conversation, with TransientProviderError (worth
    trying again) once its own attempts are spent."""

    async def answer_async(
        self, conversation: Conversation, *, max_new_tokens: int, temperature: float
    ) -> ChatResult:
        """One answer; ProviderError when it cannot be had."""
        ...

    async def stream_async(
        self, conversation: Conversation, *, max_new_tokens: int, temperature: float
    ) -> LiveAnswer:
        """One answer as it is generated, returned once its first piece is in (a failure
        before it raises here, tried again like ``answer_async``'s)."""
        ...


@runtime_checkable
class LabelScorer(Protocol):
    """A chat model that can answer by ranking a label set instead of generating (local
    models): ``LocalChatModel.score_labels_many``."""

    def score_labels_many(
        self,
        conversations: Sequence[Conversation],
        labels: Sequence[str],
        *,
        batch_size: int = 8,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """Per conversation, in input order, the likeliest of ``labels`` as the answer's
        text, its probability among the labels as its confidence; reported batch by batch
        as ``ChatModel.generate_many`` reports its answers."""
        ...
