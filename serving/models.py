"""Tables of the serving app: the application keys programs call the gateway with, the request
log, feedback and outcome events, and the fallback routes of aliases."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q, TextField, Value
from django.db.models.functions import Cast, Concat

from ftportal.models import Project

# A key's own rate limit is bounded: the default comes from settings
# (FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE), and past this a "limit" limits nothing.
MAX_RATE_LIMIT_PER_MINUTE = 1_000_000
KEY_NAME_MAX_LENGTH = 100


class ApplicationKey(models.Model):
    """A key an application calls the gateway with, for one project.

    Stored hashed the way ``ftportal.hashed_secrets`` keeps every key: the plaintext
    ``<prefix>.<secret>`` is shown once, when the key is created; the prefix (``ftp_`` and 12
    hex digits) is shown in lists and finds the row. A key works until it expires (if it has an
    expiry) or is revoked; revoking keeps the row, so the traffic it made still names it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="application_keys")
    name = models.CharField(max_length=KEY_NAME_MAX_LENGTH)
    prefix = models.CharField(max_length=32, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    rate_limit_per_minute = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RATE_LIMIT_PER_MINUTE)]
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Written at most once a minute per key (ftportal.hashed_secrets.LAST_USED_RESOLUTION).
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two live keys of one project never share a name, so a list and a log can tell
            # them apart; a revoked key's name may be reused for its replacement.
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=Q(revoked_at__isnull=True),
                name="live_app_key_name_per_project",
            ),
            models.CheckConstraint(
                condition=Q(rate_limit_per_minute__gte=1)
                & Q(rate_limit_per_minute__lte=MAX_RATE_LIMIT_PER_MINUTE),
                name="app_key_rate_limit_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


# A fallback route's bounds: below a tenth of a second a timeout or a cool-down is noise; past
# ten minutes a client has long given up; past 1,000 failures a breaker never opens.
MIN_ROUTE_SECONDS = 0.1
MAX_TIMEOUT_SECONDS = 600.0
MAX_COOLDOWN_SECONDS = 86_400.0
MAX_FAILURES_TO_OPEN = 1000


class FallbackRoute(models.Model):
    """What answers for an alias of a registered model when the version it serves fails.

    One route per alias (``Ticket triage/production``, whatever version it points at now).
    The target is either a registry version of the same registered model (say, the previous
    production version) or a catalog base model as it is (a hosted model). The gateway waits
    ``timeout_seconds`` for the primary backend; a failure or a timeout is answered by the
    target (``serving.fallbacks``). After ``failures_to_open`` failures in a row the primary's
    circuit breaker opens (``serving.breaker``): for ``cooldown_seconds`` requests go straight
    to the target, then one trial request decides whether it closes again. Pinned names
    (``<project>/<model>@<n>``) ask for one version and never fall back.
    """

    alias = models.OneToOneField(
        "registry.Alias", on_delete=models.CASCADE, related_name="fallback_route"
    )
    # Exactly one of the two (a check constraint): a version, or a base model as it is.
    fallback_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    fallback_base_model = models.ForeignKey(
        "catalog.BaseModel", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    timeout_seconds = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(MIN_ROUTE_SECONDS), MaxValueValidator(MAX_TIMEOUT_SECONDS)],
    )
    failures_to_open = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(MAX_FAILURES_TO_OPEN)]
    )
    cooldown_seconds = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(MIN_ROUTE_SECONDS), MaxValueValidator(MAX_COOLDOWN_SECONDS)],
    )
    enabled = models.BooleanField(default=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["alias__registered_model__name", "alias__name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(fallback_version__isnull=False) & Q(fallback_base_model__isnull=True))
                | (Q(fallback_version__isnull=True) & Q(fallback_base_model__isnull=False)),
                name="fallback_route_one_target",
            ),
            models.CheckConstraint(
                condition=Q(timeout_seconds__gte=MIN_ROUTE_SECONDS)
                & Q(timeout_seconds__lte=MAX_TIMEOUT_SECONDS)
                & Q(cooldown_seconds__gte=MIN_ROUTE_SECONDS)
                & Q(cooldown_seconds__lte=MAX_COOLDOWN_SECONDS)
                & Q(failures_to_open__gte=1)
                & Q(failures_to_open__lte=MAX_FAILURES_TO_OPEN),
                name="fallback_route_settings_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"fallback of {self.alias.registered_model.name}/{self.alias.name}"


class FallbackCause(models.TextChoices):
    """Why a request was answered by its alias's fallback route."""

    # The primary backend answered with an error (ProviderError).
    ERROR = "error", "primary failed"
    # The primary backend did not answer within the route's timeout.
    TIMEOUT = "timeout", "primary timed out"
    # The primary's circuit breaker was open: it was not asked at all.
    CIRCUIT_OPEN = "circuit_open", "circuit open"


class RequestStatus(models.TextChoices):
    """How a gateway request ended."""

    OK = "ok", "ok"
    # Answered by the alias's fallback route after the first backend failed or timed out.
    FALLBACK = "fallback", "fallback"
    ERROR = "error", "error"
    # Refused before any backend was asked (rate limit, bad input): still the project's traffic.
    REFUSED = "refused", "refused"


REQUEST_ID_MAX_LENGTH = 40


def request_log_search_text() -> Concat:
    """What the browser's text search reads of a row: its messages (as JSON text) and its
    output, one expression so that one trigram index serves it: ``request_log_text_search``
    (Postgres only, migration 0007) indexes it upper-cased, as Django's ``icontains`` compares;
    a test checks that the search's plan can use it. JSON text has no raw line break, so a
    match never spans the two unless the search holds one."""
    return Concat(Cast("messages", TextField()), Value("\n"), "output", output_field=TextField())


class RequestLog(models.Model):
    """One request the gateway answered (or failed to), written off the request path in
    batches by ``serving.request_log``; the log browser reads it and feedback names it by
    ``request_id``.

    Every link out of this table is SET_NULL: the log outlives keys and versions (a deleted
    version must not be blocked by millions of rows, nor take its traffic with it), and
    ``requested_model`` keeps the name the application asked for either way.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="request_logs")
    # The public id the application receives and sends feedback against ("req_" + 32 hex).
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, unique=True)
    application_key = models.ForeignKey(
        ApplicationKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_model = models.CharField(max_length=300)
    served_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # A request answered by (or failed over to) its alias's fallback route: the route, why
    # (``fallback_cause``, and ``fallback_reason`` in words), and, when a catalog base model
    # answered, which one (``served_version`` is then empty; when a version answered, it is
    # that version).
    fallback_route = models.ForeignKey(
        FallbackRoute, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    fallback_cause = models.CharField(max_length=20, choices=FallbackCause.choices, blank=True)
    fallback_reason = models.TextField(blank=True)
    # No index of its own: nothing looks rows up by it (the route's link, which the route
    # page counts by, has one), and each index is a write on every logged request.
    served_base_model = models.ForeignKey(
        "catalog.BaseModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    # The arm's name as it was when served, empty outside an experiment; ``arm`` is the row
    # an experiment page counts by (SET_NULL like every link here).
    experiment_arm = models.CharField(max_length=100, blank=True)
    arm = models.ForeignKey(
        "serving.ExperimentArm",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # A shadow arm's answer, never returned: the request id of the answered request it
    # mirrored (empty for every answered request). Experiment pages count a shadow arm on its
    # own and never among the answered traffic.
    shadow_of = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True)
    # The feedback posted on this request, copied from its Feedback row in the transaction that
    # writes either (``serving.services.feedback_record``, and the log's writer for feedback
    # that arrived before its row): the browser's feedback filter then reads one small index
    # in the page's order instead of probing the feedback table for each row it walks past.
    # The score (None: no feedback) and whether the feedback carries a correction.
    feedback_score = models.FloatField(null=True, blank=True)
    feedback_corrected = models.BooleanField(default=False)
    messages = models.JSONField()
    output = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=RequestStatus.choices)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField()
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # None with cost_known False when the served model has no price: an unpriced request is
    # never a silent zero in a cost-per-1,000 figure.
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    cost_known = models.BooleanField(default=False)
    # The OpenAI ``user`` field: the application's own id of its caller (sticky A/B arms).
    caller_user = models.CharField(max_length=200, blank=True)
    # True when personal data was masked before storage (FTPORTAL_REQUEST_LOG_REDACT_PII).
    redacted = models.BooleanField(default=False)
    # The pending example this request became when a reviewer sent it to review; a request
    # is sent once.
    sent_to_review = models.ForeignKey(
        "datasets.Example", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The browser's unfiltered page and its keyset: WHERE project = ? AND created_at <= ?
            # ORDER BY created_at DESC, id DESC LIMIT n reads n index entries at any depth.
            models.Index(
                fields=["project", "-created_at", "-id"], name="request_log_project_newest"
            ),
            # The same keyset within one served version (the "by version" filter, and what an
            # experiment page will count per version).
            models.Index(
                fields=["project", "served_version", "-created_at", "-id"],
                name="request_log_version_newest",
            ),
            # The same within one status: errors and fallbacks are rare, so without this a
            # "status = error" page would walk the whole project's history to fill itself.
            models.Index(
                fields=["project", "status", "-created_at", "-id"],
                name="request_log_status_newest",
            ),
            # An experiment page's aggregates per arm: only rows served in an experiment.
            models.Index(
                fields=["arm", "status"],
                name="request_log_by_arm",
                condition=Q(arm__isnull=False),
            ),
            # No index on created_at alone: Postgres would read one backwards for a filtered
            # page (the log lies on disk in time order, so it prices that walk cheap) and
            # walk months of rows to fill an old version's page (bench/request_log.py). Retention
            # deletes per project along request_log_project_newest instead.
            # The browser's feedback filters: only rows with feedback (a few percent, and no
            # write for a row logged without it), in the page's order; the score and the
            # correction flag are key columns so that "thumbs down" or "corrected" is checked
            # on the index entry, without reading the rows it skips.
            models.Index(
                fields=["project", "-created_at", "-id", "feedback_score", "feedback_corrected"],
                name="request_log_feedback_newest",
                condition=Q(feedback_score__isnull=False),
            ),
            # The shadow arm's mirrored rows, for the browser's "shadow only" traffic filter.
            models.Index(
                fields=["project", "-created_at", "-id"],
                name="request_log_shadow_newest",
                condition=~Q(shadow_of=""),
            ),
            # The browser's arm filter: rows served in an experiment only, in the page's order
            # (an experiment that ended months ago is not found by walking the months since).
            models.Index(
                fields=["project", "experiment_arm", "-created_at", "-id"],
                name="request_log_arm_newest",
                condition=~Q(experiment_arm=""),
            ),
            # Postgres only, so not declared here (SQLite has no GIN): request_log_text_search,
            # pg_trgm's GIN index on UPPER(request_log_search_text()), made by migration 0007.
        ]

    def __str__(self) -> str:
        return self.request_id


FEEDBACK_COMMENT_MAX_LENGTH = 10_000
OUTCOME_NAME_MAX_LENGTH = 100


class Feedback(models.Model):
    """What the application (or its user, through it) said about one answer, posted against
    the answer's ``request_id`` (``POST /v1/feedback``).

    ``request_id`` is text, not a link to the log row: the log is written in batches off the
    request path, so feedback may arrive before its row is stored; readers join on the id.
    One feedback per request: posting again replaces it (a user changing a thumbs-down to up).
    ``score`` is in [0, 1] (thumbs up 1, thumbs down 0). ``correction`` is the answer the
    caller says it should have been: sending the request to review proposes it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feedback")
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH)
    application_key = models.ForeignKey(
        ApplicationKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    score = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    comment = models.TextField(blank=True, max_length=FEEDBACK_COMMENT_MAX_LENGTH)
    correction = models.TextField(blank=True)
    caller_user = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "request_id"], name="one_feedback_per_request"
            ),
            models.CheckConstraint(
                condition=Q(score__gte=0.0) & Q(score__lte=1.0), name="feedback_score_in_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.score:g}"


class OutcomeEvent(models.Model):
    """A business event the application reports against one answer's ``request_id`` (for
    example ``ticket_resolved``), so that an experiment's arms are judged on the application's
    own success metric. Any number per request; ``value`` is 1 unless the event carries an
    amount (an order's value, say). ``request_id`` is text for the reason Feedback's is."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="outcome_events")
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH)
    name = models.CharField(max_length=OUTCOME_NAME_MAX_LENGTH)
    value = models.FloatField(default=1.0)
    application_key = models.ForeignKey(
        ApplicationKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # An experiment counts, per arm, the requests with at least one event of its
            # success name: a join on (project, request_id) filtered by name.
            models.Index(fields=["project", "name", "request_id"], name="outcome_by_name"),
            models.Index(fields=["project", "request_id"], name="outcome_by_request"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.name}"


# --- experiments ----------------------------------------------------------------------------

EXPERIMENT_NAME_MAX_LENGTH = 100
ARM_NAME_MAX_LENGTH = 100
MAX_ARM_WEIGHT = 1_000_000
# Arms of one experiment, the shadow included: enough for an A/B/n test, and a bound on the
# page's one aggregate query.
MAX_ARMS = 10


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "draft"
    RUNNING = "running", "running"
    # Ended with a winner promoted (or the winner already in production).
    CONCLUDED = "concluded", "concluded"
    # Ended without a decision: the alias serves what it points at again.
    STOPPED = "stopped", "stopped"


EXPERIMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    ExperimentStatus.DRAFT: frozenset({ExperimentStatus.RUNNING, ExperimentStatus.STOPPED}),
    ExperimentStatus.RUNNING: frozenset({ExperimentStatus.CONCLUDED, ExperimentStatus.STOPPED}),
    ExperimentStatus.CONCLUDED: frozenset(),
    ExperimentStatus.STOPPED: frozenset(),
}


class Experiment(models.Model):
    """An A/B test on one alias of a registered model (the name an application calls, e.g.
    ``support-triage/production``): while it runs, requests to that alias are split between its
    arms by weight, sticky per caller user (``serving.experiments``), and each arm is judged on
    the application's own success event (``OutcomeEvent.name``) and feedback scores.

    A pinned name (``<project>/<model>@<n>``) never enters an experiment. At most one
    experiment runs per alias (a constraint, so two leads starting at once cannot both win).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=EXPERIMENT_NAME_MAX_LENGTH)
    registered_model = models.ForeignKey(
        "registry.RegisteredModel", on_delete=models.CASCADE, related_name="experiments"
    )
    # The alias's name (registry.Alias.name): the alias row itself may move between versions
    # (or not exist yet while this is a draft).
    alias = models.CharField(max_length=100)
    success_event = models.CharField(max_length=OUTCOME_NAME_MAX_LENGTH)
    status = models.CharField(
        max_length=20, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    # The share of answered requests (0..1) mirrored to the shadow arm, when there is one.
    shadow_share = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # The verdict as it read when the experiment was concluded or stopped, for the record.
    conclusion = models.TextField(blank=True)
    promoted_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "alias"],
                condition=Q(status="running"),
                name="one_running_experiment_per_alias",
            ),
            models.UniqueConstraint(fields=["project", "name"], name="experiment_name_per_project"),
            models.CheckConstraint(
                condition=Q(shadow_share__gte=0.0) & Q(shadow_share__lte=1.0),
                name="experiment_shadow_share_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ExperimentArm(models.Model):
    """One arm: a registry version, or a catalog base model as it is (a hosted baseline), with
    its integer weight. The shadow arm (at most one) has weight 0: it is never chosen to
    answer, only mirrored to for ``Experiment.shadow_share`` of the requests."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    name = models.CharField(max_length=ARM_NAME_MAX_LENGTH)
    position = models.PositiveSmallIntegerField()
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiment_arms",
    )
    base_model = models.ForeignKey(
        "catalog.BaseModel",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiment_arms",
    )
    weight = models.PositiveIntegerField(
        validators=[MinValueValidator(0), MaxValueValidator(MAX_ARM_WEIGHT)]
    )
    is_shadow = models.BooleanField(default=False)

    class Meta:
        ordering = ["experiment_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="arm_name_per_experiment"),
            models.UniqueConstraint(
                fields=["experiment", "position"], name="arm_position_per_experiment"
            ),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(is_shadow=True),
                name="one_shadow_arm_per_experiment",
            ),
            models.CheckConstraint(
                condition=Q(model_version__isnull=False, base_model__isnull=True)
                | Q(model_version__isnull=True, base_model__isnull=False),
                name="arm_serves_a_version_or_a_base_model",
            ),
            models.CheckConstraint(
                condition=(Q(is_shadow=True) & Q(weight=0))
                | (Q(is_shadow=False) & Q(weight__gte=1) & Q(weight__lte=MAX_ARM_WEIGHT)),
                name="arm_weight_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name}: {self.name}"

    @property
    def is_baseline(self) -> bool:
        """A catalog base model as it is: comparable, never promotable."""
        return self.base_model_id is not None
