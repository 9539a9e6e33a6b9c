"""Indexes for the request log browser at millions of rows: partial indexes in the page's
order for its feedback, shadow and arm filters; on Postgres a trigram index for its text
search; the index on created_at alone removed (Postgres walked it backwards for filtered
pages). Built and dropped CONCURRENTLY on Postgres, so the log's writers never wait."""

from typing import Any

from django.contrib.postgres.operations import (
    AddIndexConcurrently,
    RemoveIndexConcurrently,
    TrigramExtension,
)
from django.db import migrations, models
from django.db.migrations.operations import AddIndex, RemoveIndex

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


class TrigramExtensionOnPostgres(TrigramExtension):
    """pg_trgm on Postgres; nothing elsewhere, backwards too (Django's own checks the database
    only forwards)."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


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


# The expression is serving.models.request_log_search_text() upper-cased, spelled as Django
# compiles it (Django cannot spell a GIN index with an operator class on this expression);
# Postgres uses the index only for the same expression, which a test checks.
TEXT_SEARCH_INDEX_SQL = """
CREATE INDEX CONCURRENTLY request_log_text_search ON serving_requestlog
USING gin ((UPPER(COALESCE(messages::text, '') || COALESCE(E'\\n' || COALESCE(output, ''), '')))
           gin_trgm_ops)
"""


def text_search_index_create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TEXT_SEARCH_INDEX_SQL)


def text_search_index_drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS request_log_text_search")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY runs outside a transaction.
    atomic = False

    dependencies = [
        ("serving", "0006_feedback_on_request_log"),
    ]

    operations = [
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
        # pg_trgm is a trusted extension (Postgres 13 and later): the database's owner may
        # create it. Nothing on other databases.
        TrigramExtensionOnPostgres(),
        migrations.RunPython(text_search_index_create, text_search_index_drop),
    ]
