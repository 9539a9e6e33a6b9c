from __future__ import annotations

from django.conf import settings
from django.db import models

from .roles import Role


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    # Put in front of imported examples that bring no system prompt of their own.
    default_system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_role_per_member")
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"


def _role_label(state: dict[str, str]) -> str:
    """The role a before/after state names, in words; a dash when there was none."""
    role = state.get("role")
    return Role(role).label if role in Role.values else "—"


class AuditAction(models.TextChoices):
    MEMBER_ADDED = "member_added", "added a member"
    USER_CREATED = "user_created", "created a user and added them"
    ROLE_CHANGED = "role_changed", "changed a role"
    MEMBER_REMOVED = "member_removed", "removed a member"


class AppendOnlyQuerySet(models.QuerySet["AuditEntry"]):
    """Bulk updates and deletes would rewrite history, so the query set refuses them."""

    def update(self, **kwargs: object) -> int:
        raise TypeError("The audit log is append-only: entries are never updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("The audit log is append-only: entries are never deleted.")


class AuditEntry(models.Model):
    """Append-only record of who changed what in a project, with the value before and after."""

    # PROTECT throughout: a project, or a user someone acted on, cannot vanish from the record.
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="audit_entries")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=30, choices=AuditAction.choices)
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.get_action_display()} {self.member} in {self.project}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise TypeError("The audit log is append-only: entries are never updated.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("The audit log is append-only: entries are never deleted.")

    @property
    def before_role(self) -> str:
        return _role_label(self.before)

    @property
    def after_role(self) -> str:
        return _role_label(self.after)


class WorkerPresence(models.Model):
    """One Celery worker process and the queues it consumes, as it last reported them: the
    web pages read it to tell people when no worker is listening for their work. Each worker
    updates its own row every FTPORTAL_WORKER_PRESENCE_SECONDS (ftportal.heartbeat); a row
    not updated for FTPORTAL_WORKER_STALE_SECONDS belongs to a worker presumed dead."""

    # "<node name>:<pid>": node names repeat across processes on one host unless set.
    name = models.CharField(max_length=300, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # Set when the worker shut down cleanly: its queues are unattended at once, without
    # waiting for the row to go stale.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.name} on {', '.join(self.queues)}"


class IdempotencyKey(models.Model):
    """A client's key for one launch (a training job, an evaluation): the same key from the same
    user in the same project gets the object the first request created, for
    ftportal.idempotency.IDEMPOTENCY_WINDOW. The unique constraint is what makes two concurrent
    requests with one key create one object (see ftportal.idempotency.once_per_key)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # What the key launched: one key may be used once per kind of launch.
    scope = models.CharField(max_length=50)
    key = models.CharField(max_length=255)
    # A hash of the request's parameters: the same key with different ones is a client's
    # mistake, refused rather than answered with an object it did not ask for.
    request_fingerprint = models.CharField(max_length=64)
    object_id = models.PositiveBigIntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user", "scope", "key"], name="idempotency_key_once"
            )
        ]


class ApiToken(models.Model):
    """An API key, stored hashed: the plaintext ``<prefix>.<secret>`` is shown once, at creation.

    The prefix finds the row; the secret is kept only as its SHA-256 (a long random secret needs
    no slow hash). A token works until it expires or is revoked (signing out of every session,
    changing the password, or DELETE /api/auth/token/ with it).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user}"
