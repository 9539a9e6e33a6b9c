"""The monitoring app's tables: alert rules and the alerts they raise, where notifications go,
drift reports, and retraining proposals waiting for a lead."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from ftportal.models import Project


class Figure(models.TextChoices):
    """Every figure an alert rule may watch. The request-log figures are computed over the
    rule's window (``monitoring.figures``); the drift figures are read from the alias's latest
    drift report; the budget figure from the project's budget (``costs``, through a hook)."""

    REQUESTS = "requests", "Requests"
    ERROR_RATE = "error_rate", "Error rate"
    FALLBACK_RATE = "fallback_rate", "Fallback rate"
    LATENCY_P50_MS = "latency_p50_ms", "Latency p50 (ms)"
    LATENCY_P95_MS = "latency_p95_ms", "Latency p95 (ms)"
    COST_USD = "cost_usd", "Cost (USD)"
    FEEDBACK_RATE = "feedback_rate", "Feedback rate"
    FEEDBACK_SCORE = "feedback_score", "Mean feedback score"
    SUCCESS_RATE = "success_rate", "Success-event rate"
    CONTRACT_VALIDITY = "contract_validity", "Answers within the contract"
    EMBEDDING_DRIFT_AUC = "embedding_drift_auc", "Input drift: domain classifier ROC AUC"
    LENGTH_DRIFT = "length_drift", "Input drift: length (Wasserstein, in standard deviations)"
    OOV_SHARE = "oov_share", "Input drift: out-of-vocabulary word share"
    PII_SHARE = "pii_share", "Input drift: share of requests with personal data"
    LANGUAGE_DRIFT = "language_drift", "Input drift: language (PSI)"
    LABEL_DRIFT_PSI = "label_drift_psi", "Output drift: answered labels (PSI)"
    UNSEEN_LABEL_SHARE = "unseen_label_share", "Output drift: share of labels never trained on"
    BUDGET_USED_PERCENT = "budget_used_percent", "Budget used this month (%)"


# The figures a drift report carries (the rest come from the request log or the budget).
DRIFT_FIGURES = frozenset(
    {
        Figure.EMBEDDING_DRIFT_AUC,
        Figure.LENGTH_DRIFT,
        Figure.OOV_SHARE,
        Figure.PII_SHARE,
        Figure.LANGUAGE_DRIFT,
        Figure.LABEL_DRIFT_PSI,
        Figure.UNSEEN_LABEL_SHARE,
    }
)


class Comparison(models.TextChoices):
    ABOVE = "above", "above"
    BELOW = "below", "below"


class AlertRule(models.Model):
    """Raise an alert when ``figure`` of an alias, over the last ``window_minutes``, is above
    (or below) ``threshold`` and at least ``min_volume`` requests were seen; notify again at
    most once per ``cooldown_minutes`` while it stays raised. Default rules are made for every
    production alias (``monitoring.rules.default_rules_ensure``) and may be edited like any."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alert_rules")
    registered_model = models.ForeignKey(
        "registry.RegisteredModel", on_delete=models.CASCADE, related_name="alert_rules"
    )
    alias = models.CharField(max_length=50, default="production")
    figure = models.CharField(max_length=40, choices=Figure.choices)
    comparison = models.CharField(max_length=10, choices=Comparison.choices)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=60)
    min_volume = models.PositiveIntegerField(default=20)
    cooldown_minutes = models.PositiveIntegerField(default=60)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["registered_model_id", "alias", "figure", "id"]
        constraints = [
            # One default rule per alias and figure, so ensuring the defaults twice adds none.
            models.UniqueConstraint(
                fields=["registered_model", "alias", "figure"],
                condition=Q(is_default=True),
                name="alert_rule_default_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_figure_display()} {self.comparison} {self.threshold:g}"


class AlertKind(models.TextChoices):
    RULE = "rule", "Rule"
    LIFECYCLE = "lifecycle", "Retirement countdown"
    RETRAIN = "retrain", "Retraining proposed"
    BUDGET = "budget", "Budget"


class AlertState(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Alert(models.Model):
    """One raised condition, named by ``key`` (the rule, or the countdown step): while it is
    not resolved, raising the same key again updates this row (``last_raised_at``,
    ``times_raised``) instead of adding one, and notifies only when the cooldown since
    ``last_notified_at`` has passed and nobody acknowledged it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    key = models.CharField(max_length=200)
    rule = models.ForeignKey(
        AlertRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    registered_model = models.ForeignKey(
        "registry.RegisteredModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    title = models.CharField(max_length=300)
    message = models.TextField(blank=True)
    # The figure's value and the rule's threshold when last raised (rule alerts).
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=AlertState.choices, default=AlertState.OPEN)
    first_raised_at = models.DateTimeField()
    last_raised_at = models.DateTimeField()
    times_raised = models.PositiveIntegerField(default=1)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    # Where the last notification went, in words ("e-mail to 3 people; webhook ops-slack").
    notified = models.TextField(blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # Empty with resolved_at set: it resolved itself (the figure went back within its rule).
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)

    class Meta:
        ordering = ["-last_raised_at", "-id"]
        constraints = [
            # At most one unresolved alert per key: two processes raising it at once make one.
            models.UniqueConstraint(
                fields=["project", "key"],
                condition=~Q(state="resolved"),
                name="alert_unresolved_once",
            )
        ]
        indexes = [models.Index(fields=["project", "state", "-last_raised_at"])]

    def __str__(self) -> str:
        return self.title


class WebhookDestination(models.Model):
    """A URL alerts may be posted to (Slack-compatible JSON), registered by a site admin in
    the Django admin: a project's leads pick among these and never type a URL, so nobody but
    an admin chooses where a project's alerts are sent (a Slack webhook URL is itself a
    secret, so it is shown to nobody else)."""

    name = models.SlugField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MonitoringSettings(models.Model):
    """A project's monitoring choices, set by its leads: where its alerts go, how drift is
    windowed, and when new approved examples are enough to propose a retrain."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, related_name="monitoring_settings"
    )
    email_enabled = models.BooleanField(default=True)
    webhook = models.ForeignKey(
        WebhookDestination, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    drift_window_hours = models.PositiveIntegerField(default=24)
    drift_min_requests = models.PositiveIntegerField(default=50)
    retrain_min_new_examples = models.PositiveIntegerField(default=200)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of {self.project}"


class DriftStatus(models.TextChoices):
    STABLE = "stable", "Stable"
    DRIFTED = "drifted", "Drifted"
    TOO_FEW = "too_few", "Too few requests"


class DriftReport(models.Model):
    """One comparison of an alias's recent requests with the training data of the version
    that served them (``monitoring.drift``): each figure with its reference and current value
    and whether it drifted (``figures``), and the requests least like anything in training
    (``drifted_examples``: request ids with their similarity, most drifted first)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="drift_reports")
    registered_model = models.ForeignKey(
        "registry.RegisteredModel", on_delete=models.CASCADE, related_name="drift_reports"
    )
    alias = models.CharField(max_length=50)
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    reference_count = models.PositiveIntegerField()
    current_count = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=DriftStatus.choices)
    figures = models.JSONField(default=dict)
    drifted_examples = models.JSONField(default=list)
    seconds = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["registered_model", "alias", "-created_at"])]

    def __str__(self) -> str:
        return f"drift of {self.registered_model}@{self.alias} at {self.window_end}"


class ProposalState(models.TextChoices):
    OPEN = "open", "Waiting for a lead"
    ACCEPTED = "accepted", "Accepted"
    DISMISSED = "dismissed", "Dismissed"
    SUPERSEDED = "superseded", "Superseded"


class RetrainProposal(models.Model):
    """A retrain the product proposes for a served version (new approved examples, drift, or
    a retiring base): a pre-filled training job and the evaluation that will gate it. Nothing
    is launched or spent until a lead accepts it; then ``training_job`` is the job launched,
    and ``eval_run`` the gating evaluation once the job's version exists."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="retrain_proposals")
    registered_model = models.ForeignKey(
        "registry.RegisteredModel", on_delete=models.CASCADE, related_name="retrain_proposals"
    )
    alias = models.CharField(max_length=50, default="production")
    served_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    # Why, each as {"kind": "new_examples" | "drift" | "base_retiring", "text": ...}.
    reasons = models.JSONField(default=list)
    # The job it would launch: the dataset version (None: the approved examples are frozen
    # into a new version when accepted), base model and hyperparameters.
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    base_model = models.ForeignKey("catalog.BaseModel", on_delete=models.PROTECT, related_name="+")
    hyperparameters = models.JSONField(default=dict)
    # The gate: evaluated on the new version's validation split against the served version.
    evaluation_plan = models.JSONField(default=dict)
    state = models.CharField(
        max_length=20, choices=ProposalState.choices, default=ProposalState.OPEN
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    training_job = models.ForeignKey(
        "training.TrainingJob", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    eval_run = models.ForeignKey(
        "evaluation.EvalRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "alias"],
                condition=Q(state="open"),
                name="retrain_proposal_open_once",
            )
        ]

    def __str__(self) -> str:
        return f"retrain {self.registered_model}@{self.alias}"
