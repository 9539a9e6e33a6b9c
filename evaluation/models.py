from __future__ import annotations

from django.conf import settings
from django.db import models

from datasets.models import DatasetVersion, DatasetVersionExample
from ftportal.models import Project
from registry.models import ModelVersion
from training.models import BaseModel


class EvalStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


EVAL_TRANSITIONS: dict[str, frozenset[str]] = {
    EvalStatus.QUEUED: frozenset({EvalStatus.RUNNING, EvalStatus.FAILED}),
    EvalStatus.RUNNING: frozenset({EvalStatus.SUCCEEDED, EvalStatus.FAILED}),
}


class EvalRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_runs")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="eval_runs"
    )
    split = models.CharField(max_length=20, default="validation")
    max_new_tokens = models.PositiveIntegerField(default=64)
    status = models.CharField(max_length=20, choices=EvalStatus.choices, default=EvalStatus.QUEUED)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Evaluation {self.pk}"


class Candidate(models.Model):
    """One model under evaluation: a registered version, or the base model itself."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveIntegerField()
    label = models.CharField(max_length=200)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates"
    )
    prompting = models.CharField(max_length=20, default="zero_shot")
    exact_match = models.FloatField(null=True)
    token_f1 = models.FloatField(null=True)
    example_count = models.PositiveIntegerField(default=0)
    generation_seconds = models.FloatField(null=True)

    class Meta:
        ordering = ["position"]


class EvalResult(models.Model):
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey(DatasetVersionExample, on_delete=models.CASCADE, related_name="+")
    output = models.TextField()
    exact_match = models.BooleanField()
    token_f1 = models.FloatField()

    class Meta:
        ordering = ["item__position"]
        constraints = [
            models.UniqueConstraint(fields=["candidate", "item"], name="one_result_per_item")
        ]
