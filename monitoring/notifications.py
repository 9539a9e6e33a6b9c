"""Telling people of an alert: e-mail to the project's managers, ML leads and admins (Django's
mail backend) and, when the project picked one, a POST of Slack-compatible JSON to a webhook a
site admin registered. Each channel fails on its own: a mail server down does not stop the
webhook, and neither undoes the alert, which stays in the in-app list."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail

from ftportal.models import Membership, Project
from ftportal.roles import Role

from .models import Alert, WebhookDestination
from .selectors import monitoring_settings_of

logger = logging.getLogger(__name__)

# Who hears of an alert: those who answer for the project's models and spending, not its
# reviewers (they see the in-app list).
NOTIFIED_ROLES = (Role.MANAGER, Role.ML_LEAD, Role.ADMIN)
WEBHOOK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Delivery:
    """Where one notification reached: the addresses e-mailed and the webhook's name (empty
    when none was set or it failed)."""

    emailed: tuple[str, ...]
    webhook: str

    @property
    def in_words(self) -> str:
        parts = []
        if self.emailed:
            parts.append(f"e-mail to {len(self.emailed)}")
        if self.webhook:
            parts.append(f"webhook {self.webhook}")
        return "; ".join(parts) or "nobody (no channel reached)"


def recipients(project: Project) -> list[str]:
    """The addresses of the project's managers, ML leads and admins that have one."""
    addresses = (
        Membership.objects.filter(project=project, role__in=NOTIFIED_ROLES, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted(set(addresses))


def alert_link(alert: Alert) -> str:
    """Where the alert's page is: absolute with FTPORTAL_SITE_URL, else the site's path."""
    return f"{settings.FTPORTAL_SITE_URL}/projects/{alert.project_id}/alerts/{alert.pk}/"


def email_text(alert: Alert) -> tuple[str, str]:
    """The alert's e-mail: its subject and plain-text body."""
    subject = f"[ftportal] {alert.project.name}: {alert.title}"
    lines = [alert.title]
    if alert.message:
        lines.append(alert.message)
    lines.append(f"The alert: {alert_link(alert)}")
    return subject, "\n\n".join(lines) + "\n"


def _slack_escaped(text: str) -> str:
    # Slack reads <...> as links and mentions and & as an entity: user content (model names,
    # alias names) must reach the channel as the characters it is.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert) -> dict[str, object]:
    """Slack's incoming-webhook JSON (``text``, and the same in one ``section`` block), which
    Mattermost, Rocket.Chat and most chat tools accept as it is."""
    severity = alert.get_severity_display().upper()
    headline = f"[{severity}] {alert.project.name}: {alert.title}"
    body = headline if not alert.message else f"{headline}\n{alert.message}"
    body = f"{body}\n{alert_link(alert)}"
    text = _slack_escaped(body)
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def _email(alert: Alert) -> tuple[str, ...]:
    subject, body = email_text(alert)
    sent = []
    for address in recipients(alert.project):
        try:
            # One message per address: members need not see each other's addresses.
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])
        except Exception:  # any mail backend's failure: the others still get theirs
            logger.exception("alert %s: no e-mail to %s", alert.pk, address)
            continue
        sent.append(address)
    return tuple(sent)


def webhook_post(destination: WebhookDestination, payload: dict[str, object]) -> None:
    """POST ``payload`` as JSON to the destination; raises on a refused or failed delivery."""
    if urllib.parse.urlsplit(destination.url).scheme not in ("http", "https"):
        # urllib would also open file:// and ftp:// URLs: a webhook is HTTP or nothing.
        raise ValueError("a webhook URL must be http or https")
    request = urllib.request.Request(
        destination.url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
        response.read()


def _webhook(alert: Alert, destination: WebhookDestination | None) -> str:
    if destination is None or not destination.enabled:
        return ""
    try:
        webhook_post(destination, webhook_payload(alert))
    except (urllib.error.URLError, OSError, ValueError) as error:
        # Never the URL in the log: a Slack webhook URL is itself its secret.
        reason = getattr(error, "code", None) or type(error).__name__
        logger.warning("alert %s: webhook %s refused or failed (%s)", alert.pk, destination, reason)
        return ""
    return destination.name


def alert_deliver(alert: Alert, *, email: bool = True) -> Delivery:
    """Send the alert through the project's channels (``email`` False: the webhook only);
    where it reached."""
    choices = monitoring_settings_of(alert.project_id)
    emailed = _email(alert) if email and choices.email_enabled else ()
    webhook = _webhook(alert, choices.webhook)
    return Delivery(emailed=emailed, webhook=webhook)
