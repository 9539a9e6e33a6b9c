"""Tables of the serving app: the application keys programs call the gateway with."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

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
