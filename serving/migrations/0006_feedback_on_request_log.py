"""The feedback's score and correction flag copied onto its request log row, backfilled from
the feedback already posted (the browser's feedback filter reads them there)."""

from typing import Any

from django.db import migrations, models
from django.db.models import Exists, OuterRef, Subquery


def copy_feedback_to_log(apps: Any, schema_editor: Any) -> None:
    """Each logged request with feedback gets its score and correction flag (one UPDATE that
    touches only those rows; feedback on ids with no stored row yet is copied by the log's
    writer when the row arrives)."""
    RequestLog = apps.get_model("serving", "RequestLog")
    Feedback = apps.get_model("serving", "Feedback")
    given = Feedback.objects.filter(
        project_id=OuterRef("project_id"), request_id=OuterRef("request_id")
    )
    RequestLog.objects.filter(Exists(given)).update(
        feedback_score=Subquery(given.values("score")[:1]),
        feedback_corrected=Exists(given.exclude(correction="")),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0005_fallback_routes"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="feedback_corrected",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="feedback_score",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.RunPython(copy_feedback_to_log, migrations.RunPython.noop),
    ]
