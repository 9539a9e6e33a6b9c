from __future__ import annotations

from django.conf import settings
from django.db import models

from ftportal.models import Project


class ExampleStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


EXAMPLE_TRANSITIONS: dict[str, frozenset[str]] = {
    ExampleStatus.PENDING: frozenset({ExampleStatus.APPROVED, ExampleStatus.REJECTED}),
    ExampleStatus.APPROVED: frozenset(
        {ExampleStatus.APPROVED, ExampleStatus.REJECTED, ExampleStatus.PENDING}
    ),
    ExampleStatus.REJECTED: frozenset({ExampleStatus.APPROVED, ExampleStatus.PENDING}),
}


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_name_per_project")
        ]

    def __str__(self) -> str:
        return self.name


class ImportBatch(models.Model):
    """One uploaded file: what came in, from whom, and what was wrong with it."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=255)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    line_count = models.PositiveIntegerField(default=0)
    imported_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)


class Example(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="examples")
    messages = models.JSONField()
    status = models.CharField(
        max_length=20, choices=ExampleStatus.choices, default=ExampleStatus.PENDING
    )
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="examples"
    )
    source_line = models.PositiveIntegerField(null=True, blank=True)
    # Bumped by every review decision; a reviewer's save names the revision they saw, so two
    # reviewers saving the same example at once cannot overwrite each other unnoticed.
    revision = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["dataset", "status", "id"])]

    def __str__(self) -> str:
        return f"Example {self.pk}"


class ReviewAction(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"
    EDIT = "edit", "Edited and approved"
    REOPEN = "reopen", "Sent back to review"


class ReviewDecision(models.Model):
    """Append-only: every review decision, who made it and what the answer was before/after."""

    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    action = models.CharField(max_length=20, choices=ReviewAction.choices)
    previous_answer = models.TextField(blank=True)
    new_answer = models.TextField(blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"


class DatasetVersion(models.Model):
    """An immutable snapshot of approved examples with a seeded train/validation split."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    seed = models.IntegerField()
    validation_fraction = models.FloatField()
    example_count = models.PositiveIntegerField()
    train_count = models.PositiveIntegerField()
    validation_count = models.PositiveIntegerField()
    note = models.TextField(blank=True)
    # The version whose split this one carried over; None when the split was drawn afresh.
    split_carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_number_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"


class DatasetVersionExample(models.Model):
    """A frozen copy of one example's messages; editing the example later does not touch it."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="items")
    example = models.ForeignKey(Example, null=True, on_delete=models.SET_NULL, related_name="+")
    position = models.PositiveIntegerField()
    split = models.CharField(max_length=20, choices=Split.choices)
    messages = models.JSONField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "position"], name="position_per_version")
        ]
