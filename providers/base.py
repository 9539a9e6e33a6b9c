"""The small interface Django apps use to train and generate, whatever the provider.

Conversations are OpenAI chat-format message lists: ``[{"role": "user", "content": "..."}]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
Conversation = list[Message]
# The kinds of a dataset's answer contract that generation can be constrained to.
ConstraintKind = Literal["label_set", "json_schema", "regex"]
CONSTRAINT_KINDS: tuple[ConstraintKind, ...] = ("label_set", "json_schema", "regex")


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
    # Validation loss is computed every this many steps and at the end.
    eval_every_steps: int = 5
    # A resumable checkpoint (adapter, optimizer, schedule, data order) every this many steps
    # and at the end; 0 saves only the final adapter.
    checkpoint_every_steps: int = 10
    # Stop after this many validation evaluations in a row without a new best validation loss,
    # and keep the best checkpoint as the result; None trains to the end.
    early_stopping_patience: int | None = None


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


def step_plan(example_count: int, config: TrainingConfig) -> StepPlan:
    """The steps a local job on ``example_count`` training examples takes; the trainer and
    the launch estimate both use it, so the estimate counts what the trainer will do."""
    steps_per_epoch = math.ceil(example_count / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return StepPlan(steps_per_epoch, total_steps, config.epochs)


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
