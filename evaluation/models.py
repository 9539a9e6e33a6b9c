from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import BaseModel, Endpoint
from datasets.models import DatasetVersion, DatasetVersionExample, Example
from ftportal.models import Project
from ftportal.selectors import heartbeat_silence
from registry.models import ModelVersion
from training.models import Checkpoint, TrainingJob


class EvalStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# Queued or running: an identical request gets this run instead of a new one, and a person
# may cancel it.
ACTIVE_EVAL_STATUSES = (EvalStatus.QUEUED, EvalStatus.RUNNING)

EVAL_TRANSITIONS: dict[str, frozenset[str]] = {
    EvalStatus.QUEUED: frozenset({EvalStatus.RUNNING, EvalStatus.FAILED, EvalStatus.CANCELLED}),
    # Back to queued only when the reaper finds the worker gone; the next worker resumes.
    # Cancelled by a person: the worker sees it before its next batch and stops; what it
    # scored stays stored but is no result (no report, no verdict, nothing the gate reads).
    EvalStatus.RUNNING: frozenset(
        {EvalStatus.SUCCEEDED, EvalStatus.FAILED, EvalStatus.QUEUED, EvalStatus.CANCELLED}
    ),
    # A person resumes a failed run; answers already stored are kept.
    EvalStatus.FAILED: frozenset({EvalStatus.QUEUED}),
}


class EvalSplit(models.TextChoices):
    """Which items of the dataset version are scored: its validation split, or all of it when
    the version is a separate held-out set."""

    VALIDATION = "validation", "Validation split"
    ALL = "all", "Every item (a held-out dataset version)"


class EvalKind(models.TextChoices):
    COMPARISON = "comparison", "Comparison"
    CHECKPOINTS = "checkpoints", "Every checkpoint of a job"


class EvalRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_runs")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="eval_runs"
    )
    split = models.CharField(max_length=20, choices=EvalSplit.choices, default=EvalSplit.VALIDATION)
    kind = models.CharField(max_length=20, choices=EvalKind.choices, default=EvalKind.COMPARISON)
    # The job whose checkpoints a checkpoint sweep compares.
    training_job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.PROTECT, related_name="eval_runs"
    )
    max_new_tokens = models.PositiveIntegerField(default=64)
    # The metric verdicts and the checkpoint recommendation are about (a key of METRICS).
    primary_metric = models.CharField(max_length=40, default="exact_match")
    regex_check = models.CharField(max_length=500, blank=True)
    contains_check = models.CharField(max_length=500, blank=True)
    # LLM-as-judge, optional: a hosted chat model compares the reference candidate's answer with
    # each other candidate's, twice (positions swapped), against the rubric.
    judge_kind = models.CharField(max_length=30, blank=True)
    judge_model = models.CharField(max_length=300, blank=True)
    # A hosted judge calls this admin-registered endpoint (its URL, its key); local: none.
    judge_endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    judge_rubric = models.TextField(blank=True)
    # Room for the judge's reasoning before its verdict line; a verdict cut off is unparseable.
    judge_max_new_tokens = models.PositiveIntegerField(default=1024)
    judge_input_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    judge_output_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    status = models.CharField(max_length=20, choices=EvalStatus.choices, default=EvalStatus.QUEUED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The attempt count when a person last resumed the run: the reaper's limit on worker
    # deaths counts from there, while attempts keeps growing (it fences stale workers).
    resumed_after_attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Computed once when the run ends: per-candidate summaries, comparisons, verdicts.
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who cancelled the run (evaluation.services.eval_run_cancel), if someone did.
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A hash of what was asked (the run's and its candidates' settings; see
    # evaluation.services.eval_run_fingerprint): while a run is queued or running, an
    # identical request gets it instead of queuing another.
    request_fingerprint = models.CharField(max_length=64, blank=True)

    # Not stored: True on the run eval_run_create returned when it was an identical one
    # already queued or running rather than a new one.
    deduplicated = False

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One active run per identical request, even when two requests arrive at once.
            models.UniqueConstraint(
                fields=["project", "request_fingerprint"],
                condition=models.Q(status__in=["queued", "running"])
                & ~models.Q(request_fingerprint=""),
                name="one_active_run_per_request",
            )
        ]

    def __str__(self) -> str:
        return f"Evaluation {self.pk}"

    @property
    def worker_silent_seconds(self) -> int | None:
        """How long the worker of this running evaluation has been silent, once its heartbeat
        is late; None otherwise (the evaluation page and the API show it)."""
        if self.status != EvalStatus.RUNNING:
            return None
        return heartbeat_silence(
            self.heartbeat_at or self.started_at,
            stale_after=settings.FTPORTAL_HEARTBEAT_STALE_SECONDS,
        )


class CandidateKind(models.TextChoices):
    MODEL_VERSION = "model_version", "Registered model version"
    CHECKPOINT = "checkpoint", "Checkpoint of a training job"
    BASE = "base", "Base model"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible endpoint"
    ANTHROPIC = "anthropic", "Anthropic Messages API"


class Prompting(models.TextChoices):
    ZERO_SHOT = "zero_shot", "Zero-shot"
    FEW_SHOT = "few_shot", "Few-shot"


class Candidate(models.Model):
    """One model under evaluation, with how it is prompted and what its tokens cost."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveIntegerField()
    label = models.CharField(max_length=200)
    kind = models.CharField(max_length=30, choices=CandidateKind.choices)
    base_model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates"
    )
    checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates"
    )
    # External models: the provider's model id and the admin-registered endpoint that serves
    # it; the worker sends that endpoint's key to that endpoint's URL, nowhere else.
    api_model = models.CharField(max_length=300, blank=True)
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompting = models.CharField(
        max_length=20, choices=Prompting.choices, default=Prompting.ZERO_SHOT
    )
    few_shot_k = models.PositiveIntegerField(default=0)
    few_shot_seed = models.IntegerField(default=0)
    # Where few-shot examples are drawn from: this version's training split; blank means the
    # run's own version (whose validation split is then the test set).
    shots_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The candidate's own prompt template: blank system keeps the item's; {input} is the item.
    system_prompt = models.TextField(blank=True)
    user_template = models.TextField(default="{input}")
    input_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    output_usd_per_million_tokens = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True
    )
    # Local candidates only: decoding is constrained to the evaluated version's answer contract
    # (providers.constrained), so every answer is one the contract allows.
    constrained = models.BooleanField(default=False)
    # Local candidates with a label-set contract only: instead of generating, every label is
    # ranked by the model's log-probability of it after the prompt; the answer is the likeliest
    # label and its probability among the labels is the result's confidence.
    label_scoring = models.BooleanField(default=False)
    # With label scoring: answers whose confidence is below this abstain (scored apart).
    abstain_below = models.FloatField(null=True, blank=True)
    # What the candidate was actually sent, recorded when it starts answering: its system
    # prompt and template, and the few-shot examples drawn with their source version.
    prompt_record = models.JSONField(default=dict, blank=True)
    # Summary of the candidate's results, written when it finishes (see evaluation.scoring).
    metrics = models.JSONField(default=dict, blank=True)
    example_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    generation_seconds = models.FloatField(null=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="candidate_position_per_run")
        ]

    def __str__(self) -> str:
        return self.label


class EvalResult(models.Model):
    """One candidate's answer to one item, scored. Written once: a resumed run skips items that
    already have a row, and the unique constraint keeps a presumed-dead worker from adding a
    second."""

    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey(DatasetVersionExample, on_delete=models.CASCADE, related_name="+")
    output = models.TextField()
    # Set when the provider refused the item for good; the item then scores as wrong.
    error = models.TextField(blank=True)
    # Local batches report the batch's time divided by its size (what an item cost in the run).
    latency_seconds = models.FloatField(null=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # Label scoring only: the answer's probability among the contract's labels.
    confidence = models.FloatField(null=True, blank=True)
    scores = models.JSONField(default=dict)
    tags = models.JSONField(default=list, blank=True)
    sent_to_review = models.ForeignKey(
        Example, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["item__position"]
        constraints = [
            models.UniqueConstraint(fields=["candidate", "item"], name="one_result_per_item")
        ]


class PairOutcome(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    # The judge preferred the same position both times: position bias, not a preference.
    INCONSISTENT = "inconsistent", "Inconsistent when swapped"
    UNPARSEABLE = "unparseable", "No verdict in the judge's reply"


class JudgeVerdict(models.Model):
    """The judge's verdict on one item for one pair of candidates, both orders kept."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="judge_verdicts")
    candidate_a = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(DatasetVersionExample, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=20, choices=PairOutcome.choices)
    original = models.CharField(max_length=10, blank=True)
    swapped = models.CharField(max_length=10, blank=True)
    original_reply = models.TextField(blank=True)
    swapped_reply = models.TextField(blank=True)
    # Both requests together.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["item__position"]
        constraints = [
            models.UniqueConstraint(
                fields=["candidate_a", "candidate_b", "item"], name="one_verdict_per_pair_item"
            )
        ]


class HumanPreference(models.Model):
    """A person's pairwise preference on one item; what the judge's agreement is measured
    against."""

    candidate_a = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(DatasetVersionExample, on_delete=models.CASCADE, related_name="+")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    choice = models.CharField(
        max_length=10,
        choices=[(PairOutcome.A, "A"), (PairOutcome.B, "B"), (PairOutcome.TIE, "Tie")],
    )
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["candidate_a", "candidate_b", "item", "rater"],
                name="one_preference_per_rater",
            )
        ]
