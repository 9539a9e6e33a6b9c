from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion
from ftportal.models import Project
from ftportal.selectors import heartbeat_silence


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    VALIDATING = "validating", "Validating"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# A worker owns a job in these statuses: it heartbeats, and the reaper watches for silence.
ACTIVE_STATUSES = (JobStatus.VALIDATING, JobStatus.RUNNING)

# Every allowed move, in one place. Back to QUEUED: a worker died and the job waits to resume
# from its last checkpoint (local) or to be polled again (hosted).
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.VALIDATING, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.VALIDATING: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
}
FINISHED_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class TrainingJob(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_jobs")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="training_jobs"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    hyperparameters = models.JSONField()
    model_name = models.CharField(
        max_length=200, help_text="Registered model to add the result to."
    )
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    device = models.CharField(max_length=40, blank=True)
    # A local job's precision of the frozen base weights, as its worker measured fastest.
    precision = models.CharField(max_length=8, blank=True)
    adapter_dir = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    # Sent to the provider with the job, so a retried submission finds the job a dead worker
    # created instead of paying for a second one.
    submission_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    provider_job_id = models.CharField(max_length=200, blank=True)
    fine_tuned_model = models.CharField(max_length=300, blank=True)
    # How many times a worker has started (or resumed) this job.
    attempts = models.PositiveIntegerField(default=0)
    # The attempt count when the job was last resumed by hand (ftportal/ownership.py): the
    # reaper's limit on worker deaths counts from there. No page resumes a job yet, so it is 0.
    resumed_after_attempts = models.PositiveIntegerField(default=0)
    # Written by the worker while it trains or polls; a stale one means the worker is gone.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    trained_tokens = models.BigIntegerField(default=0)
    # Worker time spent on the job over all attempts: what a local job costs.
    compute_seconds = models.FloatField(default=0)
    tokens_per_second = models.FloatField(null=True, blank=True)
    # Model FLOPs of the tokens trained per second of training, over the worker's measured peak
    # matrix-product rate in the job's precision (providers.local.utilisation).
    model_flops_utilization = models.FloatField(null=True, blank=True)
    seconds_left = models.FloatField(null=True, blank=True)
    best_step = models.PositiveIntegerField(null=True, blank=True)
    # The validation label accuracy of the result (its best step), when validation measured one.
    val_accuracy = models.FloatField(null=True, blank=True)
    stopped_early = models.BooleanField(default=False)
    # The search this job is a trial of; its result is registered only if the search picks it.
    search = models.ForeignKey(
        "TrainingSearch", on_delete=models.PROTECT, null=True, blank=True, related_name="trials"
    )
    estimated_cost_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    actual_cost_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    cost_basis = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training job {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_JOB_STATUSES

    @property
    def progress_percent(self) -> int:
        if not self.total_steps:
            return 100 if self.status == JobStatus.SUCCEEDED else 0
        return min(100, round(100 * self.step / self.total_steps))

    @property
    def mfu_percent(self) -> float | None:
        utilisation = self.model_flops_utilization
        return None if utilisation is None else 100 * utilisation

    @property
    def worker_silent_seconds(self) -> int | None:
        """How long the worker of this started job has been silent, once its heartbeat is
        late; None otherwise. The job page and the API show it instead of ``seconds_left``,
        which stops meaning anything when nobody trains. A hosted job's heartbeat is its last
        poll, which comes less often."""
        if self.is_finished or self.status == JobStatus.QUEUED:
            return None
        stale_after = (
            settings.FTPORTAL_HEARTBEAT_STALE_SECONDS
            if self.provider == Provider.LOCAL
            else settings.FTPORTAL_HOSTED_POLL_STALE_SECONDS
        )
        return heartbeat_silence(self.heartbeat_at or self.started_at, stale_after=stale_after)


class TrainingMetric(models.Model):
    """One point on the loss curves; written by the worker as training runs."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.FloatField()
    train_loss = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    val_accuracy = models.FloatField(null=True)
    learning_rate = models.FloatField(null=True)
    tokens_per_second = models.FloatField(null=True)
    seconds_left = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_metric_per_job_step")
        ]


class Checkpoint(models.Model):
    """A saved state of a job's model: a local adapter directory or a hosted model id. Each
    can be registered as a model version."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=500, blank=True)
    provider_model_id = models.CharField(max_length=300, blank=True)
    train_loss = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_checkpoint_per_job_step")
        ]

    def __str__(self) -> str:
        return f"{self.job} step {self.step}"


class EventLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class JobEvent(models.Model):
    """Append-only log of what happened to a job: ours and the provider's events."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=EventLevel.choices, default=EventLevel.INFO)
    message = models.TextField()
    # The provider's event id, so re-reading its event list adds nothing twice.
    provider_event_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "provider_event_id"],
                condition=~models.Q(provider_event_id=""),
                name="provider_event_once_per_job",
            )
        ]


class SearchStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


SEARCH_TRANSITIONS: dict[str, frozenset[str]] = {
    SearchStatus.RUNNING: frozenset(
        {SearchStatus.SUCCEEDED, SearchStatus.FAILED, SearchStatus.CANCELLED}
    ),
}


class TrainingSearch(models.Model):
    """A small search over training settings: a few local jobs (its trials) on one dataset
    version, each changing a setting or two of the same recipe, run one after another while
    the lead's time budget lasts, each stopped early on the validation metric. The best trial
    by that metric is registered as a model version; every trial stays visible as a job."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_searches")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="training_searches"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="searches")
    model_name = models.CharField(max_length=200)
    # Worker minutes the trials may take in all; a trial starts only when its estimate fits.
    budget_minutes = models.PositiveIntegerField()
    # The lead's settings, which every trial shares, and what each trial changes, in order.
    hyperparameters = models.JSONField(default=dict)
    trial_settings = models.JSONField()
    status = models.CharField(
        max_length=20, choices=SearchStatus.choices, default=SearchStatus.RUNNING
    )
    cancel_requested = models.BooleanField(default=False)
    best_job = models.ForeignKey(
        TrainingJob, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Why the search ended where it did, in a sentence (the budget, a cancellation).
    outcome = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training search {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status != SearchStatus.RUNNING
