"""The request log's text search: case-insensitive in the messages or the output, wildcards
taken literally, and on Postgres a plan that can read the trigram index migration 0007 made
(the index holds an expression; a search spelled differently would never use it)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from ftportal.models import Project
from serving.models import RequestLog, RequestStatus, request_log_search_text
from serving.request_log import RequestLogEntry, request_logs_write
from serving.selectors import RequestLogFilters, request_logs_filtered

pytestmark = pytest.mark.django_db


def write(project: Project, request_id: str, question: str, answer: str) -> None:
    request_logs_write(
        [
            RequestLogEntry(
                project_id=project.pk,
                requested_model="triage/production",
                messages=[{"role": "user", "content": question}],
                output=answer,
                status=RequestStatus.OK,
                latency_ms=5,
                request_id=request_id,
                created_at=timezone.now(),
            )
        ]
    )


def found(project: Project, text: str) -> set[str]:
    rows = request_logs_filtered(project, RequestLogFilters(text=text))
    return {row.request_id for row in rows}


def test_the_search_finds_words_in_messages_or_output_whatever_their_case(
    project: Project,
) -> None:
    write(project, "req_1", "My Zeppelin tickets never came", "shipping")
    write(project, "req_2", "Refund please", '{"category": "Billing"}')
    write(project, "req_3", "100% sure it was 5_000", "billing")

    assert found(project, "zeppelin") == {"req_1"}
    assert found(project, "BILLING") == {"req_2", "req_3"}
    assert found(project, "refund please") == {"req_2"}
    assert found(project, "100%") == {"req_3"}
    assert found(project, "5_0") == {"req_3"}
    assert found(project, "%") == {"req_3"}
    assert found(project, "nowhere") == set()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigram index is Postgres's")
def test_the_search_expression_is_the_one_the_trigram_index_holds(project: Project) -> None:
    write(project, "req_1", "My Zeppelin tickets never came", "shipping")
    search = RequestLog.objects.annotate(search_text=request_log_search_text()).filter(
        search_text__icontains="zeppelin"
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Every other way made dearer than any index: the plan says whether this one fits.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_indexscan = off")
        plan = search.explain()
        assert [row.request_id for row in search] == ["req_1"]
    assert "Bitmap Index Scan on request_log_text_search" in plan, plan
