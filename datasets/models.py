from __future__ import annotations

from django.conf import settings
from django.db import models

from ftportal.models import Project


class ExampleStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    # Overlapping reviewers disagreed; an adjudicator decides.
    DISPUTED = "disputed", "Disputed: needs adjudication"


EXAMPLE_TRANSITIONS: dict[str, frozenset[str]] = {
    ExampleStatus.PENDING: frozenset(
        {ExampleStatus.APPROVED, ExampleStatus.REJECTED, ExampleStatus.DISPUTED}
    ),
    ExampleStatus.APPROVED: frozenset(
        {ExampleStatus.APPROVED, ExampleStatus.REJECTED, ExampleStatus.PENDING}
    ),
    ExampleStatus.REJECTED: frozenset({ExampleStatus.APPROVED, ExampleStatus.PENDING}),
    ExampleStatus.DISPUTED: frozenset(
        {ExampleStatus.APPROVED, ExampleStatus.REJECTED, ExampleStatus.PENDING}
    ),
}


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Markdown shown beside every example in the review queue; rendered with raw HTML disabled.
    guidelines = models.TextField(blank=True)
    # How many reviewers must judge each example independently before it is decided (1 = no
    # overlap); with more, disagreements go to an adjudicator.
    review_overlap = models.PositiveSmallIntegerField(default=1)
    # What a right answer looks like (a label set, a JSON Schema or a regular expression; see
    # datasets/contracts.py); {} means any answer is accepted.
    answer_contract = models.JSONField(default=dict, blank=True)
    # The score (0 to 1, on the metric an evaluation decides on) a model must reach to be good
    # enough for this task, set by a lead; the advisor says "neither option is good enough" when
    # the best candidate stays below it. None: no target.
    quality_target = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_name_per_project")
        ]

    def __str__(self) -> str:
        return self.name


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Importing"
    SUCCEEDED = "succeeded", "Imported"
    FAILED = "failed", "Failed"


IMPORT_TRANSITIONS: dict[str, frozenset[str]] = {
    ImportStatus.QUEUED: frozenset({ImportStatus.RUNNING, ImportStatus.FAILED}),
    ImportStatus.RUNNING: frozenset({ImportStatus.SUCCEEDED, ImportStatus.FAILED}),
}


class ImportFormat(models.TextChoices):
    OPENAI_CHAT = "openai_chat", "OpenAI chat JSONL"
    PROMPT_COMPLETION = "prompt_completion", "Prompt/completion JSONL"
    ANTHROPIC = "anthropic", "Anthropic / Bedrock JSONL"
    CSV = "csv", "CSV with column mapping"


class ImportBatch(models.Model):
    """One uploaded file: what came in, from whom, and what was wrong with it."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=255)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    line_count = models.PositiveIntegerField(default=0)
    imported_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    format = models.CharField(
        max_length=30, choices=ImportFormat.choices, default=ImportFormat.OPENAI_CHAT
    )
    # Rows imported before background imports existed were imported synchronously.
    status = models.CharField(
        max_length=20, choices=ImportStatus.choices, default=ImportStatus.SUCCEEDED
    )
    # Where the upload waits for the background import; removed once the import has finished.
    stored_path = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    # Import options as given: column mapping for CSV, valid_lines_only, and so on.
    options = models.JSONField(default=dict, blank=True)
    failure_message = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Imported lines whose answer breaks the dataset's answer contract (imported, flagged):
    # {"count": n, "lines": [{"line": 3, "message": ...}, ...]} with the first lines listed.
    contract_violations = models.JSONField(default=dict, blank=True)
    # Which worker runs the import and when it last said it is alive (ftportal/heartbeat.py);
    # the import reaper ends a running import whose heartbeat went silent.
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)


class Tag(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "name"], name="tag_name_per_dataset")
        ]

    def __str__(self) -> str:
        return self.name


class OriginKind(models.TextChoices):
    """Where an example derived from another one came from."""

    EVALUATION_FAILURE = "evaluation_failure", "evaluation failure"
    PRODUCTION_FEEDBACK = "production_feedback", "production feedback"


class ExampleManager(models.Manager["Example"]):
    """Examples as everyone sees them: without the rows of an import that has not finished.

    An import writes its rows in short transactions, marked ``import_pending``, and publishes
    them all at once when it succeeds (datasets/imports/services.py); until then they belong to
    no one. ``Example._base_manager`` sees every row (deletions and the import itself use it).
    """

    def get_queryset(self) -> models.QuerySet[Example]:
        return super().get_queryset().filter(import_pending=False)


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
    # Free-form key/value pairs from the source (CSV metadata columns, a JSONL "metadata" object).
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="examples")
    # Bumped by every review decision; a reviewer's save names the revision they saw, so two
    # reviewers saving the same example at once cannot overwrite each other unnoticed.
    revision = models.PositiveIntegerField(default=0)
    # The example this one was made from (a failure sent to review, production feedback). While
    # the origin is held out, this one is frozen into validation with it; see
    # services.example_derive and the freeze. RESTRICT: an origin cannot be deleted on its own
    # while something derives from it, only together with its dataset.
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="derived"
    )
    origin_kind = models.CharField(max_length=30, choices=OriginKind.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by an import that has not finished: hidden until it publishes (or deletes) them.
    import_pending = models.BooleanField(default=False)

    objects = ExampleManager()

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


class ExampleAssignment(models.Model):
    """An example put in a reviewer's queue; with overlap, several reviewers get the same one."""

    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="assignments")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["example", "reviewer"], name="one_assignment_each")
        ]
        indexes = [models.Index(fields=["reviewer", "example"])]


class Verdict(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class ReviewVote(models.Model):
    """One reviewer's independent judgement of an example under overlapping review."""

    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="votes")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    # The answer the reviewer would approve (their edit, or the answer as shown).
    answer = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["example", "reviewer"], name="one_vote_each")
        ]


class ExampleComment(models.Model):
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class AnalysisStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Finished"
    FAILED = "failed", "Failed"


ANALYSIS_TRANSITIONS: dict[str, frozenset[str]] = {
    AnalysisStatus.QUEUED: frozenset({AnalysisStatus.RUNNING, AnalysisStatus.FAILED}),
    AnalysisStatus.RUNNING: frozenset({AnalysisStatus.SUCCEEDED, AnalysisStatus.FAILED}),
}


class AnalysisRun(models.Model):
    """One pass of validation, token counting and the quality analyzers over a dataset."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="analyses")
    # The catalog key of the base model whose tokenizer and context length were used.
    base_model_key = models.CharField(max_length=100)
    status = models.CharField(
        max_length=20, choices=AnalysisStatus.choices, default=AnalysisStatus.QUEUED
    )
    # Token statistics (min, mean, p95, max of prompt and answer tokens, tokens per epoch,
    # cost) and counts per finding kind.
    stats = models.JSONField(default=dict, blank=True)
    failure_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]


class Severity(models.TextChoices):
    ERROR = "error", "Error"
    WARNING = "warning", "Warning"


class Finding(models.Model):
    """A problem an analyzer found in one example, e.g. a near-duplicate or an e-mail address."""

    run = models.ForeignKey(AnalysisRun, on_delete=models.CASCADE, related_name="findings")
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="findings")
    kind = models.CharField(max_length=40)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    message = models.TextField()
    # Examples found together (one duplicate group, one conflict) share a group key.
    group_key = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["run", "kind"]),
            models.Index(fields=["example", "run"]),
        ]


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    # Every item of a held-out test set version: never trained on, never split.
    TEST = "test", "Test"


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
    # The readiness report (size against the guide's bands, quality findings counted), computed
    # once for the frozen content; empty until first asked for.
    readiness = models.JSONField(default=dict, blank=True)
    # Origins retired from validation by this freeze (their derived copies went to training).
    retired_from_validation = models.JSONField(default=list, blank=True)
    # Train and validation inputs that match exactly or nearly, frozen anyway: the lead's
    # reason and the pairs as they were listed (empty when there were none).
    overlap_override_reason = models.TextField(blank=True)
    overlap_count = models.PositiveIntegerField(default=0)
    overlap_pairs = models.JSONField(default=list, blank=True)
    # The dataset's answer contract when this version was frozen: readiness and evaluation
    # check the frozen answers against it, not against whatever the dataset says today.
    answer_contract = models.JSONField(default=dict, blank=True)
    # Set when the lead froze approved examples that break the contract anyway:
    # {"reason": ..., "examples": [{"example": id, "message": ...}, ...]}.
    contract_override = models.JSONField(default=dict, blank=True)
    # A held-out test set: frozen without a split (every item is Split.TEST), evaluated whole,
    # and refused as training data.
    is_test_set = models.BooleanField(default=False)
    # A test set's overlap with the project's training versions, as last checked:
    # {"checked_at": ..., "versions": [{"version": id, "exact": n, "near": n, "pairs": [...]}]}.
    test_overlaps = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_number_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"


class ValidationRetirement(models.Model):
    """Append-only: a lead moved a derived example to training, which retires its origin from
    validation from the next freeze on (the evaluation set shrinks by one item)."""

    derived = models.OneToOneField(Example, on_delete=models.CASCADE, related_name="retirement")
    origin = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="retirements")
    retired_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField(blank=True)
    # The latest version's validation size when the choice was made, as the warning said it.
    validation_count_before = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class DatasetVersionExample(models.Model):
    """A frozen copy of one example's messages; editing the example later does not touch it."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="items")
    example = models.ForeignKey(Example, null=True, on_delete=models.SET_NULL, related_name="+")
    position = models.PositiveIntegerField()
    split = models.CharField(max_length=20, choices=Split.choices)
    messages = models.JSONField()
    # The example's metadata as it was when frozen (CSV exports carry it as columns).
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "position"], name="position_per_version")
        ]
