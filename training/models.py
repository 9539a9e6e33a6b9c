from __future__ import annotations

from django.conf import settings
from django.db import models

from datasets.models import DatasetVersion
from ftportal.models import Project


class Provider(models.TextChoices):
    LOCAL = "local", "Local LoRA (transformers + peft)"
    OPENAI = "openai", "OpenAI fine-tuning API"


class BaseModel(models.Model):
    """The catalog of base models a job may start from, and when each goes away."""

    key = models.CharField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    source = models.TextField(blank=True, help_text="Where the weights come from.")
    retires_at = models.DateField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    context_window = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per example the model accepts in training."
    )
    # "" means the model's own tokenizer (local models); hosted models name a tiktoken encoding.
    tokenizer = models.CharField(max_length=50, blank=True)
    training_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )

    class Meta:
        ordering = ["parameter_count", "key"]

    def __str__(self) -> str:
        return self.display_name


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
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
    adapter_dir = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
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


class TrainingMetric(models.Model):
    """One point on the loss curves; written by the worker as training runs."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.FloatField()
    train_loss = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step"]
