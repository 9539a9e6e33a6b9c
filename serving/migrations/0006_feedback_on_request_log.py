"""The feedback's score and correction flag copied onto its request log row, backfilled from
the feedback already posted; partial indexes for the browser's feedback, shadow and arm
filters; the index on created_at alone removed (the planner walked it for filtered pages)."""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models
from django.db.migrations.operations import AddIndex, RemoveIndex
from django.db.models import Exists, OuterRef, Subquery


class AddIndexWithoutBlockingWrites(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on Postgres: building an index reads the whole log (seconds to
    minutes at millions of rows), and a plain CREATE INDEX would block the log's writers that
    long, filling their queues until they drop rows. A plain CREATE INDEX elsewhere (SQLite)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexWithoutBlockingWrites(RemoveIndexConcurrently):
    """DROP INDEX CONCURRENTLY on Postgres (for the reason above), a plain DROP elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


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
    # CREATE INDEX CONCURRENTLY runs outside a transaction; the other steps are one statement
    # each (adding the columns is a change of the catalog only, whatever the table's size).
    atomic = False

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
        RemoveIndexWithoutBlockingWrites(model_name="requestlog", name="request_log_created"),
        AddIndexWithoutBlockingWrites(
            model_name="requestlog",
            index=models.Index(
                condition=models.Q(("feedback_score__isnull", False)),
                fields=["project", "-created_at", "-id", "feedback_score", "feedback_corrected"],
                name="request_log_feedback_newest",
            ),
        ),
        AddIndexWithoutBlockingWrites(
            model_name="requestlog",
            index=models.Index(
                condition=models.Q(("shadow_of", ""), _negated=True),
                fields=["project", "-created_at", "-id"],
                name="request_log_shadow_newest",
            ),
        ),
        AddIndexWithoutBlockingWrites(
            model_name="requestlog",
            index=models.Index(
                condition=models.Q(("experiment_arm", ""), _negated=True),
                fields=["project", "experiment_arm", "-created_at", "-id"],
                name="request_log_arm_newest",
            ),
        ),
    ]
