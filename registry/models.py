from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.models import Project
from training.models import Checkpoint, TrainingJob

PRODUCTION_ALIAS = "production"


class RegisteredModel(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_name_per_project")
        ]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """A trained model with its lineage: what data, which base, how, by which job."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField()
    training_job = models.ForeignKey(
        TrainingJob, on_delete=models.PROTECT, related_name="model_versions"
    )
    # Which of the job's checkpoints this version is; each checkpoint is registered once.
    checkpoint = models.OneToOneField(
        Checkpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="model_version"
    )
    # Hosted models: the id a chat call names (ft:...); local ones use adapter_dir.
    fine_tuned_model = models.CharField(max_length=300, blank=True)
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="model_versions"
    )
    dataset_hash = models.CharField(max_length=64)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    hyperparameters = models.JSONField()
    adapter_dir = models.CharField(max_length=500)
    final_train_loss = models.FloatField(null=True)
    final_val_loss = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "number"], name="version_number_per_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.number}"


class Alias(models.Model):
    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="aliases"
    )
    name = models.CharField(max_length=50)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registered_model", "name"], name="alias_per_model")
        ]


class AliasChangeKind(models.TextChoices):
    PROMOTE = "promote", "Promoted"
    ROLLBACK = "rollback", "Rolled back"


class AliasChange(models.Model):
    """Append-only history of every alias move, with who and when."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="alias_changes"
    )
    alias = models.CharField(max_length=50)
    kind = models.CharField(max_length=20, choices=AliasChangeKind.choices)
    from_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    reason = models.TextField(blank=True)
    # A promotion's evidence as the gate saw it (registry.gate.PromotionEvidence.as_record):
    # the evaluation, the metric, both scores, the interval, the verdict and the margin.
    evidence = models.JSONField(default=dict, blank=True)
    # An admin promoted although the evidence did not allow it.
    overridden = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
