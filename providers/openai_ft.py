"""Hosted fine-tuning through the OpenAI API, or any service that speaks it (``base_url``).

The SDK's own retries are off: the caller (a Celery task) owns retries and backoff, so every
failure comes back at once as a TransientProviderError (try later, with the provider's
Retry-After when it sent one) or a ProviderError (trying again would fail the same way).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import openai
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.fine_tuning.supervised_hyperparameters_param import (
    SupervisedHyperparametersParam,
)

from providers.base import (
    Conversation,
    HostedCheckpoint,
    HostedEvent,
    HostedJobState,
    HostedJobStatus,
    HostedMetric,
    HostedTrainingConfig,
    ProviderError,
    TransientProviderError,
)

logger = logging.getLogger(__name__)

# The job metadata key that marks which submission created a job, so a retried submit finds it.
SUBMISSION_METADATA_KEY = "ftportal_submission"
# The most the list endpoints return per page: fewer round trips when paging.
PAGE_SIZE = 100
# Keys OpenAI's chat fine-tuning format accepts on a message; anything else (our own
# annotations) would make the provider refuse the whole file.
FINE_TUNING_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
)
# 408 is a request timeout, 409 a lock held by a concurrent request: both pass if tried later.
TRANSIENT_STATUS_CODES = frozenset({408, 409, 429})
# A 429 with one of these codes (or types) means the account is out of credit or over a spend
# limit: waiting does not help until someone changes the billing, so it is not transient.
BILLING_ERROR_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)

STATUS_BY_PROVIDER_STATUS = {
    "validating_files": HostedJobStatus.VALIDATING,
    "queued": HostedJobStatus.QUEUED,
    "running": HostedJobStatus.RUNNING,
    "succeeded": HostedJobStatus.SUCCEEDED,
    "failed": HostedJobStatus.FAILED,
    "cancelled": HostedJobStatus.CANCELLED,
    # A paused job keeps its place without training, the nearest of our states is queued.
    "paused": HostedJobStatus.QUEUED,
}


class OpenAIFineTuner:
    """HostedFineTuner for OpenAI's fine-tuning API (supervised method)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 30.0,
        organization: str | None = None,
    ) -> None:
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            organization=organization,
            max_retries=0,
        )

    def close(self) -> None:
        """Release the HTTP connections; the tuner cannot be used afterwards."""
        self._client.close()

    # -- submit ------------------------------------------------------------------------------

    def submit(
        self,
        *,
        train: Sequence[Conversation],
        validation: Sequence[Conversation],
        base_model: str,
        config: HostedTrainingConfig,
        submission_key: str,
    ) -> str:
        if not train:
            raise ProviderError("Nothing to fine-tune on: the training set is empty.")
        if not submission_key:
            raise ProviderError("A submission key is required so that a retry cannot pay twice.")
        existing_job_id = self._find_job_by_submission_key(submission_key)
        if existing_job_id is not None:
            logger.info("Submission %s already has job %s", submission_key, existing_job_id)
            return existing_job_id

        file_stem = _safe_file_stem(submission_key)
        training_file_id = self._upload(
            train, filename=f"{file_stem}-train.jsonl", doing="uploading the training file"
        )
        validation_file_id = (
            self._upload(
                validation,
                filename=f"{file_stem}-validation.jsonl",
                doing="uploading the validation file",
            )
            if validation
            else None
        )
        with _classified_errors("creating the fine-tuning job"):
            job = self._client.fine_tuning.jobs.create(
                **job_create_arguments(
                    base_model=base_model,
                    config=config,
                    training_file_id=training_file_id,
                    validation_file_id=validation_file_id,
                    submission_key=submission_key,
                ),
                # Belt and braces with the metadata lookup: if this very request is retried
                # after its response was lost, the provider answers with the same job.
                extra_headers={"Idempotency-Key": submission_key},
            )
        return job.id

    def _find_job_by_submission_key(self, submission_key: str) -> str | None:
        with _classified_errors("looking for a job already submitted with this key"):
            # Iterating the page follows has_more; a service that ignores the metadata filter
            # returns every job, hence the check on each one.
            for job in self._client.fine_tuning.jobs.list(
                metadata={SUBMISSION_METADATA_KEY: submission_key}, limit=PAGE_SIZE
            ):
                if (job.metadata or {}).get(SUBMISSION_METADATA_KEY) == submission_key:
                    return job.id
        return None

    def _upload(self, conversations: Sequence[Conversation], *, filename: str, doing: str) -> str:
        content = conversations_to_jsonl(conversations)
        with _classified_errors(doing):
            uploaded = self._client.files.create(
                file=(filename, content, "application/jsonl"), purpose="fine-tune"
            )
        return uploaded.id

    # -- poll --------------------------------------------------------------------------------

    def poll(self, provider_job_id: str, *, after_event: str | None = None) -> HostedJobState:
        _require_job_id(provider_job_id)
        with _classified_errors(f"checking fine-tuning job {provider_job_id}"):
            job = self._client.fine_tuning.jobs.retrieve(provider_job_id)
        status = hosted_status(job.status)
        events = self._events_after(provider_job_id, after_event)
        # No checkpoint exists before training starts: spare the request (and the rate limit).
        checkpoints = (
            []
            if status in (HostedJobStatus.VALIDATING, HostedJobStatus.QUEUED)
            else self._checkpoints(provider_job_id)
        )
        return HostedJobState(
            provider_job_id=job.id,
            status=status,
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
            error=job_error_text(job) if status is HostedJobStatus.FAILED else "",
            events=[hosted_event(event) for event in events],
            metrics=[metric for event in events if (metric := hosted_metric(event)) is not None],
            checkpoints=[hosted_checkpoint(checkpoint) for checkpoint in checkpoints],
            estimated_finish=job.estimated_finish,
        )

    def _events_after(
        self, provider_job_id: str, after_event: str | None
    ) -> list[FineTuningJobEvent]:
        """Events newer than ``after_event``, oldest first.

        The API lists newest first and its ``after`` cursor pages towards older events, so read
        from the newest down until the one already seen.
        """
        newest_first: list[FineTuningJobEvent] = []
        with _classified_errors(f"reading the events of fine-tuning job {provider_job_id}"):
            for event in self._client.fine_tuning.jobs.list_events(
                provider_job_id, limit=PAGE_SIZE
            ):
                if event.id == after_event:
                    break
                newest_first.append(event)
        return newest_first[::-1]

    def _checkpoints(self, provider_job_id: str) -> list[FineTuningJobCheckpoint]:
        with _classified_errors(f"reading the checkpoints of fine-tuning job {provider_job_id}"):
            checkpoints = list(
                self._client.fine_tuning.jobs.checkpoints.list(provider_job_id, limit=PAGE_SIZE)
            )
        return sorted(checkpoints, key=lambda checkpoint: checkpoint.step_number)

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, provider_job_id: str) -> None:
        _require_job_id(provider_job_id)
        try:
            with _classified_errors(f"cancelling fine-tuning job {provider_job_id}"):
                self._client.fine_tuning.jobs.cancel(provider_job_id)
        except TransientProviderError:
            raise
        except ProviderError:
            # A retried cancel whose first try worked is refused ("already cancelled"); the
            # caller got what it asked for, so that is no error.
            with _classified_errors(f"checking fine-tuning job {provider_job_id}"):
                job = self._client.fine_tuning.jobs.retrieve(provider_job_id)
            if job.status != "cancelled":
                raise


# -- request building ------------------------------------------------------------------------


def conversations_to_jsonl(conversations: Sequence[Conversation]) -> bytes:
    """One ``{"messages": [...]}`` line per conversation, per-message ``weight`` kept."""
    lines = []
    for conversation in conversations:
        messages = [
            {key: value for key, value in message.items() if key in FINE_TUNING_MESSAGE_KEYS}
            for message in conversation
        ]
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def job_create_arguments(
    *,
    base_model: str,
    config: HostedTrainingConfig,
    training_file_id: str,
    validation_file_id: str | None,
    submission_key: str,
) -> dict[str, Any]:
    """Keyword arguments of ``fine_tuning.jobs.create``; what is None is left out, so the
    provider chooses ("auto")."""
    hyperparameters: SupervisedHyperparametersParam = {"n_epochs": config.epochs}
    if config.batch_size is not None:
        hyperparameters["batch_size"] = config.batch_size
    if config.learning_rate_multiplier is not None:
        hyperparameters["learning_rate_multiplier"] = config.learning_rate_multiplier
    arguments: dict[str, Any] = {
        "model": base_model,
        "training_file": training_file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "metadata": {SUBMISSION_METADATA_KEY: submission_key},
    }
    if validation_file_id is not None:
        arguments["validation_file"] = validation_file_id
    if config.suffix:
        arguments["suffix"] = config.suffix
    if config.seed is not None:
        arguments["seed"] = config.seed
    return arguments


def _safe_file_stem(submission_key: str) -> str:
    return "ftportal-" + re.sub(r"[^A-Za-z0-9._-]+", "_", submission_key)


def _require_job_id(provider_job_id: str) -> None:
    if not provider_job_id:
        raise ProviderError("No provider job id given.")


# -- response mapping ------------------------------------------------------------------------


def hosted_status(provider_status: str) -> HostedJobStatus:
    status = STATUS_BY_PROVIDER_STATUS.get(provider_status)
    if status is None:
        # A status newer than this code: not finished as far as we can tell, so keep polling.
        logger.warning("Unknown fine-tuning job status %r, treated as running", provider_status)
        return HostedJobStatus.RUNNING
    return status


def job_error_text(job: FineTuningJob) -> str:
    if job.error is None:
        return "The provider reported the job as failed without saying why."
    return _with_code_and_param(job.error.message, code=job.error.code, param=job.error.param)


def hosted_event(event: FineTuningJobEvent) -> HostedEvent:
    return HostedEvent(
        provider_id=event.id, created_at=event.created_at, level=event.level, message=event.message
    )


def hosted_metric(event: FineTuningJobEvent) -> HostedMetric | None:
    """The losses a "metrics" event carries; None for any other event."""
    if event.type != "metrics" or not isinstance(event.data, Mapping):
        return None
    step = event.data.get("step")
    if not isinstance(step, int | float):
        return None
    return HostedMetric(
        step=int(step),
        train_loss=_float_or_none(event.data.get("train_loss")),
        val_loss=_float_or_none(event.data.get("valid_loss")),
    )


def hosted_checkpoint(checkpoint: FineTuningJobCheckpoint) -> HostedCheckpoint:
    metrics = checkpoint.metrics
    # The loss on the full validation set, when there is one, is what a checkpoint is chosen
    # by; the per-step valid_loss is measured on a batch only.
    val_loss = metrics.valid_loss if metrics.full_valid_loss is None else metrics.full_valid_loss
    return HostedCheckpoint(
        provider_id=checkpoint.id,
        model_id=checkpoint.fine_tuned_model_checkpoint,
        step=checkpoint.step_number,
        train_loss=metrics.train_loss,
        val_loss=val_loss,
    )


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


# -- error classification --------------------------------------------------------------------


@contextmanager
def _classified_errors(doing: str) -> Iterator[None]:
    """Turn whatever the SDK raises into a ProviderError saying what was being done."""
    try:
        yield
    except openai.OpenAIError as error:
        raise classify_error(doing, error) from error


def classify_error(doing: str, error: openai.OpenAIError) -> ProviderError:
    if isinstance(error, openai.APITimeoutError):
        return TransientProviderError(f"{doing}: the provider did not answer in time.")
    if isinstance(error, openai.APIConnectionError):
        return TransientProviderError(f"{doing}: could not reach the provider ({error}).")
    if isinstance(error, openai.APIStatusError):
        # The SDK hands over the body's "error" object, when there is one, as ``body``.
        return classify_status(
            doing, status=error.status_code, body=error.body, headers=error.response.headers
        )
    return ProviderError(f"{doing}: {error}")


def classify_status(
    doing: str, *, status: int, body: object, headers: Mapping[str, str]
) -> ProviderError:
    """The error of an OpenAI-compatible answer with HTTP ``status``: transient (worth trying
    again, with the provider's Retry-After) or not. ``body`` is the answer's ``error`` object
    when it has one, else its body as parsed or as text; ``headers`` are read without regard
    to case. The SDK's errors (:func:`classify_error`) and the gateway's own client
    (``providers.hosted_chat``) both come here, so both say and retry the same."""
    fields = body if isinstance(body, Mapping) else {}
    code, kind, param = (_text_or_none(fields.get(name)) for name in ("code", "type", "param"))
    message = f"{doing}: {_status_error_text(body, code=code, param=param)} (HTTP {status})"
    if BILLING_ERROR_CODES & {code, kind}:
        return ProviderError(message, status_code=status)
    if status in TRANSIENT_STATUS_CODES or status >= 500:
        return TransientProviderError(
            message, retry_after=retry_after_seconds(headers), status_code=status
        )
    return ProviderError(message, status_code=status)


def _text_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def _status_error_text(body: object, *, code: str | None, param: str | None) -> str:
    message = body.get("message") if isinstance(body, Mapping) else None
    if not isinstance(message, str) or not message:
        message = body.strip() if isinstance(body, str) and body.strip() else "no details given"
    return _with_code_and_param(message, code=code, param=param)


def _with_code_and_param(message: str, *, code: str | None, param: str | None) -> str:
    details = [f"{name}: {value}" for name, value in (("code", code), ("param", param)) if value]
    return f"{message} ({', '.join(details)})" if details else message


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long the provider asked us to wait: retry-after-ms (OpenAI's, more precise), else
    Retry-After in seconds or as an HTTP date; None when it did not say."""
    milliseconds = _non_negative_float(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, but the parser leaves the zone out
        moment = moment.replace(tzinfo=datetime.UTC)
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


def _non_negative_float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None or number != number or number < 0 or number == float("inf"):
        return None
    return number
