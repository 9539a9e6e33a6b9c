"""A fake OpenAI fine-tuning API on 127.0.0.1, so the real ``openai`` SDK runs over real HTTP.

It speaks the documented endpoints and JSON shapes (files with purpose "fine-tune", fine-tuning
jobs, their events and checkpoints, cancel), checks the Bearer key, filters jobs by metadata and
honours Idempotency-Key. Jobs advance one tick each time they are retrieved (GET
/fine_tuning/jobs/{id}), never by the clock, so tests poll without sleeping:

    poll 1: validating_files
    poll 2: queued, or failed when the training or validation file is invalid
    poll 3 and on: running, ``steps_per_poll`` steps per poll, a "metrics" event per step and a
            checkpoint at the end of each epoch; then succeeded, with fine_tuned_model
            "ft:<model>:<suffix>:<short id>" and trained_tokens = rough tokens x epochs.

It also serves the organisation cost report (GET /organization/costs), which takes the admin
key (``admin_key``), never the API key: one bucket a UTC day from ``start_time`` up to
``end_time``, each holding that day's ``daily_costs`` (dollars, a Decimal) as one cost result,
in pages of ``limit`` buckets (at most ``max_cost_page_buckets``) joined by ``next_page``.

It lists its models (GET /models): the models it fine-tunes (``models``), those named in
``shutdown_dates`` and every fine-tuned model of a succeeded job, each as OpenAI's Model
object; a model named in ``shutdown_dates`` carries its ``shutdown_date`` ("YYYY-MM-DD", or
null for None), the others leave the optional field out. One page, as OpenAI answers it.

Scenario controls: ``fail_next_requests`` (429 with Retry-After, 5xx, ...),
``stall_next_requests`` (longer than the client's timeout), ``drop_response_after_next_job_create``
(the job is created but its id never reaches the client), ``fail_training_at_step``, and plain
attributes for services that do less than OpenAI (``filters_by_metadata``, ``keeps_metadata``,
``max_page_size``). A training file fails validation because of its content, as at OpenAI: an
example that is not JSON, has no messages or no assistant message.

Use it as a context manager (``with FakeOpenAIServer() as fake:``) or as the ``fake_openai``
pytest fixture (import ``fake_openai_fixture`` into the test module).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fakes.http import FakeServer, InjectedFailure, JSONHandler, Reply

DEFAULT_API_KEY = "sk-fake-test-key"
DEFAULT_ADMIN_KEY = "sk-admin-fake-test-key"
DEFAULT_MODELS = frozenset({"gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14"})
ORGANIZATION_ID = "org-fake"
# What "auto" resolves to here; OpenAI picks from the data, a fixed choice keeps tests exact.
AUTO_EPOCHS = 3
AUTO_BATCH_SIZE = 1
AUTO_LEARNING_RATE_MULTIPLIER = 2.0
SECONDS_PER_STEP = 10  # only for estimated_finish
DEFAULT_LIST_LIMIT = 20
# OpenAI's cost report: 7 buckets a page unless asked, at most 180.
DEFAULT_COST_BUCKETS = 7
MAX_COST_BUCKETS = 180
SECONDS_PER_DAY = 86_400
METADATA_QUERY = re.compile(r"^metadata\[(?P<key>[^\]]*)\]$")
# Multipart form fields by name: (file name or None, raw value).
FormFields = dict[str, tuple[str | None, bytes]]
KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def rough_token_count(jsonl: bytes) -> int:
    """Whitespace-separated words of every message's text: rough, but easy to predict in tests."""
    words = 0
    for line in jsonl.decode("utf-8").splitlines():
        if not line.strip():
            continue
        for message in json.loads(line)["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                words += len(content.split())
    return words


def first_invalid_line(jsonl: bytes) -> str | None:
    """Why the file cannot train a chat model, naming the line; None when every line can."""
    try:
        lines = jsonl.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return "The file is not UTF-8 text."
    examples = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        examples += 1
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            return f"Line {number} is not valid JSON."
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages:
            return f'Line {number} has no "messages" list.'
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in KNOWN_ROLES:
                return f"Line {number} has a message with a missing or unknown role."
        if not any(message["role"] == "assistant" for message in messages):
            return f"Line {number} has no assistant message to learn from."
    if examples == 0:
        return "The file has no examples."
    return None


def _simulated_train_loss(step: int) -> float:
    return round(2.0 / (1 + 0.25 * step), 4)


def _simulated_valid_loss(step: int) -> float:
    return round(2.1 / (1 + 0.2 * step), 4)


@dataclass
class UploadedFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class FakeJob:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    created_at: int
    status: str = "validating_files"
    retrievals: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    tokens_per_epoch: int = 0
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    finished_at: int | None = None
    error: dict[str, Any] | None = None
    # Oldest first, as they happened; the API lists them newest first.
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.n_epochs

    @property
    def is_finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def model_name(self) -> str:
        short_id = self.id.removeprefix("ftjob-")[-8:]
        if self.suffix:
            return f"ft:{self.model}:{self.suffix}:{short_id}"
        return f"ft:{self.model}:{short_id}"

    def to_json(self) -> dict[str, Any]:
        hyperparameters = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        remaining_steps = self.total_steps - self.step
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": hyperparameters,
            "model": self.model,
            "organization_id": ORGANIZATION_ID,
            "result_files": [],
            "seed": self.seed,
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "estimated_finish": (
                int(time.time()) + remaining_steps * SECONDS_PER_STEP
                if self.status == "running"
                else None
            ),
            "integrations": [],
            "metadata": self.metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        }


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the server's path prefix, e.g. "/fine_tuning/jobs"
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    json: Any  # the decoded JSON body, or None


class _ApiError(Exception):
    """Ends a request with OpenAI's error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {"message": message, "type": error_type, "param": param, "code": code}
        }


class _DropConnection(Exception):
    """Close the socket without answering, as when a response is lost on the way back."""


class FakeOpenAIServer(FakeServer):
    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        admin_key: str = DEFAULT_ADMIN_KEY,
        path_prefix: str = "/v1",
        models: frozenset[str] = DEFAULT_MODELS,
        steps_per_poll: int = 2,
    ) -> None:
        self.api_key = api_key
        self.admin_key = admin_key
        self.path_prefix = path_prefix.rstrip("/")
        self.models = models
        self.steps_per_poll = steps_per_poll
        # What a service that does less than OpenAI would do.
        self.filters_by_metadata = True
        self.keeps_metadata = True
        self.max_page_size = 100
        self.max_cost_page_buckets = MAX_COST_BUCKETS
        # What the organisation was billed each UTC day, in dollars (the cost report).
        self.daily_costs: dict[date, Decimal] = {}
        # Announced shutdown days of listed models (GET /models); None is served as null.
        self.shutdown_dates: dict[str, date | None] = {}

        self.files: dict[str, UploadedFile] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[RecordedRequest] = []

        self._ids = itertools.count(1)
        self._jobs_by_idempotency_key: dict[str, str] = {}
        self._drop_next_job_create_response = False
        self._failure_at_step: tuple[int, str, str] | None = None
        super().__init__(_handler_for(self))

    @property
    def base_url(self) -> str:
        return self.origin + self.path_prefix

    # -- scenario controls -------------------------------------------------------------------

    def fail_next_requests(
        self,
        count: int,
        *,
        status: int,
        headers: dict[str, str] | None = None,
        message: str = "",
        code: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests, whatever they are, with this status; the error's
        code defaults to OpenAI's for the status (rate_limit_exceeded for 429)."""
        failure = InjectedFailure(
            status=status,
            headers=dict(headers or {}),
            message=message or f"Simulated {status}.",
            code=code or ("rate_limit_exceeded" if status == 429 else None),
        )
        self._queue_failures(count, failure)

    def stall_next_requests(self, count: int = 1, *, seconds: float) -> None:
        """Hold the next ``count`` requests this long before handling them normally."""
        self._queue_stalls(count, seconds)

    def drop_response_after_next_job_create(self) -> None:
        """Create the next job, then close the connection without answering."""
        with self._lock:
            self._drop_next_job_create_response = True

    def fail_training_at_step(
        self,
        step: int,
        *,
        message: str = "The job failed due to an internal error.",
        code: str = "internal_error",
    ) -> None:
        """Every running job fails when it reaches ``step``."""
        with self._lock:
            self._failure_at_step = (step, code, message)

    # -- what tests assert on ----------------------------------------------------------------

    @property
    def files_created(self) -> int:
        return len(self.files)

    @property
    def jobs_created(self) -> int:
        """Paid jobs: an Idempotency-Key replay is not a new one."""
        return len(self.jobs)

    @property
    def cost_report_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/organization/costs"]

    @property
    def models_list_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET" and r.path == "/models"]

    @property
    def job_create_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/fine_tuning/jobs"]

    # -- request handling (called from the handler threads) ---------------------------------

    def _next_stall(self) -> float:
        with self._lock:
            return self._stalls.popleft() if self._stalls else 0.0

    def _handle(self, request: RecordedRequest, form: FormFields) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._failures:
                return self._injected_failure_reply(self._failures.popleft())
            # The organisation's admin endpoints take its admin key; everything else the API key.
            admin = request.path.startswith("/organization/")
            key = self.admin_key if admin else self.api_key
            if request.headers.get("authorization") != f"Bearer {key}":
                raise _ApiError(
                    401,
                    "Incorrect API key provided. You can find your API key in your account.",
                    code="invalid_api_key",
                )
            return self._route(request, form)

    @staticmethod
    def _injected_failure_reply(failure: InjectedFailure) -> Reply:
        if failure.status == 429:
            error_type = "requests"
        elif failure.status >= 500:
            error_type = "server_error"
        else:
            error_type = "invalid_request_error"
        body = {
            "error": {
                "message": failure.message,
                "type": error_type,
                "param": None,
                "code": failure.code,
            }
        }
        return Reply(failure.status, body, failure.headers)

    def _route(self, request: RecordedRequest, form: FormFields) -> Reply:
        parts = [part for part in request.path.split("/") if part]
        match request.method, parts:
            case "POST", ["files"]:
                return Reply(200, self._upload_file(form))
            case "POST", ["fine_tuning", "jobs"]:
                return self._create_job(request)
            case "GET", ["fine_tuning", "jobs"]:
                return Reply(200, self._list_jobs(request.query))
            case "GET", ["fine_tuning", "jobs", job_id]:
                job = self._job(job_id)
                self._advance(job)
                return Reply(200, job.to_json())
            case "GET", ["fine_tuning", "jobs", job_id, "events"]:
                return Reply(200, self._page(self._job(job_id).events[::-1], request.query))
            case "GET", ["fine_tuning", "jobs", job_id, "checkpoints"]:
                return Reply(200, self._page(self._job(job_id).checkpoints[::-1], request.query))
            case "POST", ["fine_tuning", "jobs", job_id, "cancel"]:
                return Reply(200, self._cancel(self._job(job_id)))
            case "GET", ["organization", "costs"]:
                return Reply(200, self._costs_page(request.query))
            case "GET", ["models"]:
                return Reply(200, {"object": "list", "data": self._listed_models()})
        raise _ApiError(404, f"Unknown request URL: {request.method} {request.path}.")

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    def _upload_file(self, form: FormFields) -> dict[str, Any]:
        if "file" not in form:
            raise _ApiError(400, "'file' is a required property", param="file")
        purpose = form.get("purpose", (None, b""))[1].decode()
        if purpose != "fine-tune":
            raise _ApiError(400, f"'{purpose}' is not a supported purpose here.", param="purpose")
        filename, content = form["file"]
        uploaded = UploadedFile(
            id=self._new_id("file-"),
            filename=filename or "upload",
            purpose=purpose,
            content=content,
            created_at=int(time.time()),
        )
        self.files[uploaded.id] = uploaded
        return uploaded.to_json()

    def _create_job(self, request: RecordedRequest) -> Reply:
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key and idempotency_key in self._jobs_by_idempotency_key:
            replayed = self.jobs[self._jobs_by_idempotency_key[idempotency_key]]
            return Reply(200, replayed.to_json())
        body = request.json if isinstance(request.json, dict) else {}
        job = self._job_from_create_body(body)
        self.jobs[job.id] = job
        if idempotency_key:
            self._jobs_by_idempotency_key[idempotency_key] = job.id
        self._add_event(job, f"Created fine-tuning job: {job.id}")
        self._add_event(job, f"Validating training file: {job.training_file}")
        if self._drop_next_job_create_response:
            self._drop_next_job_create_response = False
            raise _DropConnection
        return Reply(200, job.to_json())

    def _job_from_create_body(self, body: dict[str, Any]) -> FakeJob:
        model = body.get("model")
        if model not in self.models:
            raise _ApiError(
                400,
                f"Model {model} is not available for fine-tuning or does not exist.",
                code="model_not_available",
                param="model",
            )
        training_file = self._fine_tune_file(body.get("training_file"), "training_file")
        validation_file = body.get("validation_file")
        if validation_file is not None:
            self._fine_tune_file(validation_file, "validation_file")
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
            raise _ApiError(400, "suffix must be at most 64 characters.", param="suffix")
        metadata = _checked_metadata(body.get("metadata"))
        n_epochs, batch_size, learning_rate_multiplier = _resolved_hyperparameters(body)
        return FakeJob(
            id=self._new_id("ftjob-"),
            model=model,
            training_file=training_file.id,
            validation_file=validation_file,
            suffix=suffix,
            seed=body["seed"] if isinstance(body.get("seed"), int) else 42,
            metadata=metadata if self.keeps_metadata else None,
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            created_at=int(time.time()),
        )

    def _fine_tune_file(self, file_id: object, param: str) -> UploadedFile:
        uploaded = self.files.get(file_id) if isinstance(file_id, str) else None
        if uploaded is None:
            raise _ApiError(400, f"Could not find file {file_id}.", param=param)
        if uploaded.purpose != "fine-tune":
            raise _ApiError(400, f"File {file_id} was not uploaded for fine-tuning.", param=param)
        return uploaded

    def _list_jobs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = {
            found["key"]: values[-1]
            for name, values in query.items()
            if (found := METADATA_QUERY.match(name))
        }
        newest_first = list(self.jobs.values())[::-1]
        if wanted and self.filters_by_metadata:
            newest_first = [
                job
                for job in newest_first
                if job.metadata is not None
                and all(job.metadata.get(key) == value for key, value in wanted.items())
            ]
        return self._page([job.to_json() for job in newest_first], query)

    def _page(
        self, items_newest_first: list[dict[str, Any]], query: dict[str, list[str]]
    ) -> dict[str, Any]:
        return _cursor_page(items_newest_first, query, max_page_size=self.max_page_size)

    def _listed_models(self) -> list[dict[str, Any]]:
        fine_tuned = [job.fine_tuned_model for job in self.jobs.values() if job.fine_tuned_model]
        names = sorted(set(self.models) | set(self.shutdown_dates)) + fine_tuned
        return [self._model_object(name) for name in dict.fromkeys(names)]

    def _model_object(self, name: str) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": ORGANIZATION_ID if name.startswith("ft:") else "system",
        }
        if name in self.shutdown_dates:
            day = self.shutdown_dates[name]
            model["shutdown_date"] = day.isoformat() if day is not None else None
        return model

    def _costs_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """One page of the day buckets from ``start_time`` (required) up to ``end_time`` (now
        when absent); ``page`` is the cursor of the previous page's ``next_page``."""
        start = _int_param(query, "start_time")
        if start is None:
            raise _ApiError(400, "start_time is required.", param="start_time")
        end = _int_param(query, "end_time") or int(time.time())
        if query.get("bucket_width", ["1d"])[-1] != "1d":
            raise _ApiError(400, "Only 1d buckets are supported.", param="bucket_width")
        limit = _int_param(query, "limit") or DEFAULT_COST_BUCKETS
        if not 1 <= limit <= MAX_COST_BUCKETS:
            raise _ApiError(400, "limit must be between 1 and 180.", param="limit")
        first = start - start % SECONDS_PER_DAY  # buckets snap to the start of the UTC day
        days = list(range(first, end, SECONDS_PER_DAY))
        cursor = query.get("page", [""])[-1]
        offset = int(cursor.removeprefix("page_")) if cursor.startswith("page_") else 0
        size = min(limit, self.max_cost_page_buckets)
        shown = days[offset : offset + size]
        more = offset + size < len(days)
        return {
            "object": "page",
            "data": [self._cost_bucket(moment) for moment in shown],
            "has_more": more,
            "next_page": f"page_{offset + size}" if more else None,
        }

    def _cost_bucket(self, start: int) -> dict[str, Any]:
        amount = self.daily_costs.get(datetime.fromtimestamp(start, tz=UTC).date())
        results = (
            []
            if amount is None
            else [
                {
                    "object": "organization.costs.result",
                    "amount": {"value": float(amount), "currency": "usd"},
                    "line_item": None,
                    "project_id": None,
                }
            ]
        )
        return {
            "object": "bucket",
            "start_time": start,
            "end_time": start + SECONDS_PER_DAY,
            "results": results,
        }

    def _job(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise _ApiError(404, f"Could not find fine-tuning job {job_id}.", param="id")
        return job

    def _cancel(self, job: FakeJob) -> dict[str, Any]:
        if job.status == "cancelled":
            raise _ApiError(400, f"Job {job.id} has already been cancelled.")
        if job.is_finished:
            raise _ApiError(400, f"Job {job.id} has already {job.status} and cannot be cancelled.")
        job.status = "cancelled"
        job.finished_at = int(time.time())
        self._add_event(job, "Fine-tuning job cancelled.")
        return job.to_json()

    # -- job progress ------------------------------------------------------------------------

    def _advance(self, job: FakeJob) -> None:
        job.retrievals += 1
        if job.status == "validating_files" and job.retrievals >= 2:
            self._validate_files(job)
        elif job.status == "queued" and job.retrievals >= 3:
            job.status = "running"
            self._add_event(job, "Fine-tuning job started.")
            self._train(job)
        elif job.status == "running":
            self._train(job)

    def _validate_files(self, job: FakeJob) -> None:
        for param, file_id in (
            ("training_file", job.training_file),
            ("validation_file", job.validation_file),
        ):
            if file_id is None:
                continue
            problem = first_invalid_line(self.files[file_id].content)
            if problem is not None:
                name = param.replace("_", " ")
                self._fail(
                    job,
                    code=f"invalid_{param}",
                    message=f"The job failed due to an invalid {name}. {problem}",
                    param=param,
                )
                return
        training = self.files[job.training_file].content
        examples = sum(1 for line in training.splitlines() if line.strip())
        job.steps_per_epoch = math.ceil(examples / job.batch_size)
        job.tokens_per_epoch = rough_token_count(training)
        job.status = "queued"
        self._add_event(job, "Files validated, moving job to queued state.")

    def _train(self, job: FakeJob) -> None:
        for _ in range(self.steps_per_poll):
            job.step += 1
            self._add_metrics_event(job)
            if self._failure_at_step is not None and job.step == self._failure_at_step[0]:
                _, code, message = self._failure_at_step
                self._fail(job, code=code, message=message, param=None)
                return
            if job.step % job.steps_per_epoch == 0:
                self._add_checkpoint(job)
            if job.step >= job.total_steps:
                self._succeed(job)
                return

    def _add_metrics_event(self, job: FakeJob) -> None:
        data: dict[str, Any] = {
            "step": job.step,
            "total_steps": job.total_steps,
            "train_loss": _simulated_train_loss(job.step),
            "train_mean_token_accuracy": 0.5,
        }
        message = f"Step {job.step}/{job.total_steps}: training loss={data['train_loss']}"
        if job.validation_file is not None:
            data["valid_loss"] = _simulated_valid_loss(job.step)
            message += f", validation loss={data['valid_loss']}"
        self._add_event(job, message, event_type="metrics", data=data)

    def _add_checkpoint(self, job: FakeJob) -> None:
        metrics: dict[str, Any] = {
            "step": float(job.step),
            "train_loss": _simulated_train_loss(job.step),
            "train_mean_token_accuracy": 0.5,
        }
        if job.validation_file is not None:
            metrics["valid_loss"] = _simulated_valid_loss(job.step)
            metrics["full_valid_loss"] = _simulated_valid_loss(job.step) - 0.01
        job.checkpoints.append(
            {
                "id": self._new_id("ftckpt_"),
                "object": "fine_tuning.job.checkpoint",
                "created_at": int(time.time()),
                "fine_tuned_model_checkpoint": f"{job.model_name}:ckpt-step-{job.step}",
                "fine_tuning_job_id": job.id,
                "metrics": metrics,
                "step_number": job.step,
            }
        )
        self._add_event(job, f"Checkpoint created at step {job.step}.")

    def _succeed(self, job: FakeJob) -> None:
        job.status = "succeeded"
        job.fine_tuned_model = job.model_name
        job.trained_tokens = job.tokens_per_epoch * job.n_epochs
        job.finished_at = int(time.time())
        self._add_event(job, f"New fine-tuned model created: {job.model_name}")
        self._add_event(job, "The job has successfully completed.")

    def _fail(self, job: FakeJob, *, code: str, message: str, param: str | None) -> None:
        job.status = "failed"
        job.error = {"code": code, "message": message, "param": param}
        job.finished_at = int(time.time())
        self._add_event(job, message, level="error")

    def _add_event(
        self,
        job: FakeJob,
        message: str,
        *,
        level: str = "info",
        event_type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(
            {
                "id": self._new_id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": event_type,
                "data": data or {},
            }
        )


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    value = query.get(name, [""])[-1]
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise _ApiError(400, f"{name} must be an integer.", param=name)


def _checked_metadata(metadata: object) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise _ApiError(400, "metadata must be an object of at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise _ApiError(
                400,
                "metadata keys are at most 64 characters and values strings of at most 512.",
                param="metadata",
            )
    return dict(metadata)


def _resolved_hyperparameters(body: dict[str, Any]) -> tuple[int, int, float]:
    """(n_epochs, batch_size, learning_rate_multiplier), "auto" or absent resolved."""
    supervised = (body.get("method") or {}).get("supervised") or {}
    # The top-level "hyperparameters" is the deprecated spelling; "method" wins when both exist.
    given = supervised.get("hyperparameters") or body.get("hyperparameters") or {}
    n_epochs = given.get("n_epochs", "auto")
    batch_size = given.get("batch_size", "auto")
    learning_rate_multiplier = given.get("learning_rate_multiplier", "auto")
    param = "method.supervised.hyperparameters"
    if n_epochs != "auto" and not (isinstance(n_epochs, int) and 1 <= n_epochs <= 50):
        raise _ApiError(400, "n_epochs must be between 1 and 50.", param=f"{param}.n_epochs")
    if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
        raise _ApiError(400, "batch_size must be at least 1.", param=f"{param}.batch_size")
    if learning_rate_multiplier != "auto" and not (
        isinstance(learning_rate_multiplier, int | float) and learning_rate_multiplier > 0
    ):
        raise _ApiError(
            400,
            "learning_rate_multiplier must be positive.",
            param=f"{param}.learning_rate_multiplier",
        )
    return (
        AUTO_EPOCHS if n_epochs == "auto" else n_epochs,
        AUTO_BATCH_SIZE if batch_size == "auto" else batch_size,
        AUTO_LEARNING_RATE_MULTIPLIER
        if learning_rate_multiplier == "auto"
        else float(learning_rate_multiplier),
    )


def _cursor_page(
    items_newest_first: list[dict[str, Any]],
    query: dict[str, list[str]],
    *,
    max_page_size: int,
) -> dict[str, Any]:
    """OpenAI's list envelope: ``after`` is the id of the last item of the previous page."""
    start = 0
    after = query.get("after", [None])[-1]
    if after is not None:
        ids = [item["id"] for item in items_newest_first]
        start = ids.index(after) + 1 if after in ids else len(ids)
    limit = int(query.get("limit", [str(DEFAULT_LIST_LIMIT)])[-1])
    page_size = max(1, min(limit, max_page_size))
    page = items_newest_first[start : start + page_size]
    return {
        "object": "list",
        "data": page,
        "has_more": start + page_size < len(items_newest_first),
    }


def _multipart_form(content_type: str, body: bytes) -> FormFields:
    envelope = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = BytesParser(policy=HTTP).parsebytes(envelope)
    fields: FormFields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _handler_for(server: FakeOpenAIServer) -> type[JSONHandler]:
    class Handler(JSONHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            # One request per connection: no idle keep-alive threads outlive a test.
            self.close_connection = True
            body = self.read_body()
            stall = server._next_stall()
            if stall and server._stopping.wait(stall):
                return
            try:
                reply = server._handle(*self._parse(body))
            except _ApiError as error:
                reply = Reply(error.status, error.body)
            except _DropConnection:
                return
            self.send(reply)

        def _parse(self, body: bytes) -> tuple[RecordedRequest, FormFields]:
            url = urlsplit(self.path)
            if not url.path.startswith(server.path_prefix + "/"):
                raise _ApiError(404, f"Unknown request URL: {self.command} {url.path}.")
            content_type = self.headers.get("Content-Type", "")
            form: FormFields = {}
            decoded: Any = None
            if content_type.startswith("multipart/form-data"):
                form = _multipart_form(content_type, body)
            elif body:
                try:
                    decoded = json.loads(body)
                except json.JSONDecodeError:
                    raise _ApiError(400, "The request body is not valid JSON.")
            request = RecordedRequest(
                method=self.command,
                path=url.path.removeprefix(server.path_prefix),
                query=parse_qs(url.query, keep_blank_values=True),
                headers=self.lower_case_headers(),
                json=decoded,
            )
            return request, form

    return Handler


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAIServer]:
    """A started fake for one test; import this name into a test module to use ``fake_openai``."""
    with FakeOpenAIServer() as fake:
        yield fake
