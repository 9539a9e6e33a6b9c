"""The request log browser: keyset pages return every row once (equal times included),
filters, who may read and send to review, send-to-review's examples and provenance, and
escaping."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from datasets.models import Dataset, Example, ExampleStatus, OriginKind
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from serving.models import ApplicationKey, Feedback, OutcomeEvent, RequestLog, RequestStatus
from serving.request_log import RequestLogEntry, request_logs_write
from serving.selectors import (
    FeedbackFilter,
    LogCursor,
    RequestLogFilters,
    TrafficFilter,
    log_cursor_parse,
    request_log_page,
    request_logs_filtered,
)
from serving.services import feedback_record, request_logs_send_to_review
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

pytestmark = pytest.mark.django_db

SENDERS = [Role.REVIEWER, Role.ML_LEAD, Role.ADMIN]


def log(project: Project, n: int, *, at: datetime, **overrides: object) -> None:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "requested_model": "triage/production",
        "messages": [{"role": "user", "content": f"question {n}"}],
        "output": f"answer {n}",
        "status": RequestStatus.OK,
        "latency_ms": 10,
        "request_id": f"req_{n:04d}",
        "created_at": at,
    }
    fields.update(overrides)
    request_logs_write([RequestLogEntry(**fields)])  # type: ignore[arg-type]


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def walk(project: Project, filters: RequestLogFilters, size: int) -> list[str]:
    seen: list[str] = []
    cursor: LogCursor | None = None
    while True:
        page = request_log_page(
            request_logs_filtered(project, filters), older_than=cursor, size=size
        )
        seen += [row.request_id for row in page.rows]
        if page.older is None:
            return seen
        cursor = log_cursor_parse(page.older.encoded(), field="after")


def test_keyset_pages_return_every_row_once_with_equal_times(project: Project) -> None:
    start = timezone.now()
    # Three rows at each instant: the id breaks the ties.
    for n in range(23):
        log(project, n, at=start - timedelta(seconds=n // 3))
    expected = list(
        RequestLog.objects.order_by("-created_at", "-id").values_list("request_id", flat=True)
    )

    for size in (1, 2, 3, 4, 7, 50):
        assert walk(project, RequestLogFilters(), size) == expected


def test_newer_pages_walk_back_to_the_top(project: Project) -> None:
    start = timezone.now()
    for n in range(10):
        log(project, n, at=start - timedelta(seconds=n // 2))
    rows = request_logs_filtered(project, RequestLogFilters())
    first = request_log_page(rows, size=4)
    second = request_log_page(rows, older_than=first.older, size=4)
    back = request_log_page(rows, newer_than=second.newer, size=4)
    assert [r.pk for r in back.rows] == [r.pk for r in first.rows]
    assert back.newer is None and first.newer is None


def test_filters(project: Project, make_member: Callable[..., User]) -> None:
    other = Project.objects.create(name="Other")
    now = timezone.now()
    log(project, 1, at=now, status=RequestStatus.ERROR, error="timeout")
    log(project, 2, at=now - timedelta(days=2), experiment_arm="challenger")
    log(project, 3, at=now - timedelta(days=5), output="Refund approved")
    log(other, 4, at=now, output="Refund approved")

    def ids(**filters: object) -> set[str]:
        rows = request_logs_filtered(project, RequestLogFilters(**filters))  # type: ignore[arg-type]
        return {row.request_id for row in rows}

    assert ids() == {"req_0001", "req_0002", "req_0003"}
    assert ids(status=RequestStatus.ERROR) == {"req_0001"}
    assert ids(experiment_arm="challenger") == {"req_0002"}
    assert ids(since=now - timedelta(days=3)) == {"req_0001", "req_0002"}
    assert ids(until=now - timedelta(days=1)) == {"req_0002", "req_0003"}
    assert ids(text="refund") == {"req_0003"}
    assert ids(text="QUESTION 2") == {"req_0002"}

    client = logged_in(make_member(Role.MANAGER))
    html = client.get(reverse("request_logs", args=[project.pk]), {"status": "error"}).content
    assert b"req_0001" in html and b"req_0002" not in html
    refused = client.get(reverse("request_logs", args=[project.pk]), {"since": "yesterday"})
    assert refused.status_code == 400 and b"since" in refused.content
    assert client.get(reverse("request_logs", args=[project.pk]), {"after": "x"}).status_code == 400


@pytest.mark.parametrize("role", list(Role))
def test_every_member_reads_and_only_reviewers_leads_admins_may_send(
    project: Project, make_member: Callable[..., User], dataset: Dataset, role: Role
) -> None:
    log(project, 1, at=timezone.now())
    client = logged_in(make_member(role))
    page = client.get(reverse("request_logs", args=[project.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "req_0001" in html
    may_send = role in SENDERS
    assert ('id="send-to-review"' in html) is may_send

    sent = client.post(
        reverse("request_logs_send", args=[project.pk]),
        {"request": "req_0001", "dataset": dataset.pk},
    )
    assert sent.status_code == (302 if may_send else 403)
    assert Example.objects.filter(dataset=dataset).count() == (1 if may_send else 0)


def test_an_outsider_gets_404(project: Project, make_member: Callable[..., User]) -> None:
    other = Project.objects.create(name="Other")
    outsider = make_member(Role.ADMIN, target=other)
    client = logged_in(outsider)
    assert client.get(reverse("request_logs", args=[project.pk])).status_code == 404
    sent = client.post(reverse("request_logs_send", args=[project.pk]), {"request": "x"})
    assert sent.status_code == 404


def test_send_to_review_makes_pending_examples_with_provenance(
    project: Project, make_member: Callable[..., User], dataset: Dataset
) -> None:
    now = timezone.now()
    log(project, 1, at=now, output="billing")
    log(project, 2, at=now, output="shipping")
    client = logged_in(make_member(Role.REVIEWER))

    response = client.post(
        reverse("request_logs_send", args=[project.pk]),
        {
            "request": ["req_0001", "req_0002"],
            "dataset": dataset.pk,
            "correction-req_0001": "refunds",
        },
    )

    assert response.status_code == 302
    examples = {e.metadata["request_id"]: e for e in Example.objects.filter(dataset=dataset)}
    assert set(examples) == {"req_0001", "req_0002"}
    corrected = examples["req_0001"]
    assert corrected.status == ExampleStatus.PENDING
    assert corrected.origin_kind == OriginKind.PRODUCTION_FEEDBACK
    assert corrected.messages == [
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "refunds"},
    ]
    assert corrected.metadata["model_output"] == "billing" and corrected.metadata["corrected"]
    assert examples["req_0002"].messages[-1]["content"] == "shipping"
    assert RequestLog.objects.get(request_id="req_0001").sent_to_review_id == corrected.pk
    # Sent once: again creates nothing.
    client.post(
        reverse("request_logs_send", args=[project.pk]),
        {"request": "req_0001", "dataset": dataset.pk},
    )
    assert Example.objects.filter(dataset=dataset).count() == 2


def test_send_to_review_refuses_another_projects_requests_and_datasets(
    project: Project, make_member: Callable[..., User], dataset: Dataset
) -> None:
    other = Project.objects.create(name="Other")
    foreign_dataset = Dataset.objects.create(project=other, name="theirs")
    log(project, 1, at=timezone.now())
    log(other, 2, at=timezone.now())
    lead = make_member(Role.ML_LEAD)

    with pytest.raises(ApplicationError, match="requests"):
        request_logs_send_to_review(
            project=project, request_ids=["req_0002"], dataset=dataset, user=lead
        )
    with pytest.raises(ApplicationError, match="dataset"):
        request_logs_send_to_review(
            project=project, request_ids=["req_0001"], dataset=foreign_dataset, user=lead
        )
    client = logged_in(lead)
    page = reverse("request_logs_send", args=[project.pk])
    assert (
        client.post(page, {"request": "req_0001", "dataset": foreign_dataset.pk}).status_code == 404
    )
    refused = client.post(page, {"request": "req_0002", "dataset": dataset.pk})
    assert refused.status_code == 400 and b"requests" in refused.content
    assert Example.objects.count() == 0


def test_odd_characters_are_escaped(project: Project, make_member: Callable[..., User]) -> None:
    log(
        project,
        1,
        at=timezone.now(),
        messages=[{"role": XSS, "content": XSS}],
        output=XSS,
        error=XSS,
        experiment_arm=XSS,
        caller_user=XSS,
        requested_model=XSS,
    )
    response = logged_in(make_member(Role.REVIEWER)).get(
        reverse("request_logs", args=[project.pk]), {"q": XSS}
    )
    html = response.content.decode()
    assert XSS not in html
    assert html.count(XSS_ESCAPED) >= 6


def test_the_pages_links_walk_older_and_newer_keeping_the_filters(
    project: Project, make_member: Callable[..., User]
) -> None:
    from html import unescape

    start = timezone.now()
    for n in range(120):
        log(project, n, at=start - timedelta(seconds=n // 3), experiment_arm="a" if n % 2 else "b")
    client = logged_in(make_member(Role.MANAGER))
    url = reverse("request_logs", args=[project.pk])

    def visit(query: str) -> tuple[list[str], dict[str, str]]:
        html = client.get(f"{url}{query}").content.decode()
        shown = re.findall(r'<tr id="request-(req_\d+)">', html)
        links = {
            name: unescape(href)
            for href, name in re.findall(r'<a href="(\?[^"]*)" id="(newer|older)-requests">', html)
        }
        return shown, links

    first, links = visit("?arm=a")
    assert "newer" not in links and "arm=a" in links["older"]
    second, links = visit(links["older"])
    assert "arm=a" in links["newer"] and "older" not in links
    assert len(first) == 50 and len(second) == 10 and not set(first) & set(second)
    expected = list(
        RequestLog.objects.filter(experiment_arm="a")
        .order_by("-created_at", "-id")
        .values_list("request_id", flat=True)
    )
    assert first + second == expected
    back, _ = visit(links["newer"])
    assert back == first


# --- feedback and events ------------------------------------------------------------------------


def squeezed(html: str) -> str:
    """``html`` with each run of white space one space, as a browser shows it."""
    return " ".join(html.split())


def give_feedback(project: Project, request_id: str, score: float, **fields: str) -> Feedback:
    """Feedback as ``POST /v1/feedback`` stores it, by a key of ``project``."""
    key, _ = ApplicationKey.objects.get_or_create(
        project=project,
        name="support bot",
        defaults={"prefix": f"ftp_{project.pk:012x}", "rate_limit_per_minute": 60},
    )
    stored, _ = feedback_record(key=key, request_id=request_id, score=score, **fields)
    return stored


def test_the_feedback_filter_and_what_each_row_shows(
    project: Project, make_member: Callable[..., User]
) -> None:
    other = Project.objects.create(name="Other")
    now = timezone.now()
    for n in range(1, 6):
        log(project, n, at=now - timedelta(seconds=n))
    give_feedback(project, "req_0001", 0.0, comment="wrong team", correction="billing")
    give_feedback(project, "req_0002", 1.0)
    give_feedback(project, "req_0003", 0.3, caller_user="customer-3")
    give_feedback(project, "req_0005", 0.9, correction="shipping")
    # Another project's feedback under an id of this project's log attaches to nothing here.
    give_feedback(other, "req_0004", 0.0, correction="theirs")
    OutcomeEvent.objects.create(project=project, request_id="req_0002", name="ticket_resolved")
    OutcomeEvent.objects.create(project=project, request_id="req_0002", name="refund", value=42.5)
    OutcomeEvent.objects.create(project=other, request_id="req_0004", name="theirs")

    def ids(feedback: str) -> list[str]:
        rows = request_logs_filtered(project, RequestLogFilters(feedback=feedback))
        return [row.request_id for row in request_log_page(rows).rows]

    assert ids(FeedbackFilter.ANY) == ["req_0001", "req_0002", "req_0003", "req_0005"]
    assert ids(FeedbackFilter.DOWN) == ["req_0001", "req_0003"]
    assert ids(FeedbackFilter.UP) == ["req_0002", "req_0005"]
    assert ids(FeedbackFilter.CORRECTED) == ["req_0001", "req_0005"]
    assert ids(FeedbackFilter.NONE) == ["req_0004"]

    client = logged_in(make_member(Role.MANAGER))
    url = reverse("request_logs", args=[project.pk])
    page = client.get(url, {"feedback": "down"})
    assert page.status_code == 200
    html = squeezed(page_text(page))
    assert re.findall(r'<tr id="request-(req_\d+)">', html) == ["req_0001", "req_0003"]
    row_one = html.split('id="request-req_0001"')[1].split("</tr>")[0]
    assert "thumbs down" in row_one and "“wrong team”" in row_one
    assert '<span class="muted">should be:</span> billing' in row_one
    assert "score 0.30" in html and "from customer-3" in html
    everything = squeezed(page_text(client.get(url)))
    row_two = everything.split('id="request-req_0002"')[1].split("</tr>")[0]
    assert "thumbs up" in row_two and "ticket_resolved" in row_two and "refund = 42.5" in row_two
    row_four = everything.split('id="request-req_0004"')[1].split("</tr>")[0]
    assert "theirs" not in row_four and "thumbs" not in row_four
    refused = client.get(url, {"feedback": "sideways"})
    assert refused.status_code == 400 and b"feedback" in refused.content


def test_the_feedback_filter_keeps_keyset_pages_whole(project: Project) -> None:
    start = timezone.now()
    for n in range(30):
        log(project, n, at=start - timedelta(seconds=n // 3))
        if n % 3 == 0:
            give_feedback(project, f"req_{n:04d}", 0.0)
    expected = [f"req_{n:04d}" for n in range(30) if n % 3 == 0]
    shown = walk(project, RequestLogFilters(feedback=FeedbackFilter.DOWN), 4)
    assert sorted(shown) == expected and len(set(shown)) == len(shown) == 10
    unrated = walk(project, RequestLogFilters(feedback=FeedbackFilter.NONE), 7)
    assert len(unrated) == 20 and not set(unrated) & set(expected)


def test_send_to_review_proposes_the_feedbacks_correction_unless_the_reviewer_writes_one(
    project: Project, make_member: Callable[..., User], dataset: Dataset
) -> None:
    now = timezone.now()
    log(project, 1, at=now, output="shipping")
    log(project, 2, at=now, output="shipping")
    log(project, 3, at=now, output="shipping")
    give_feedback(project, "req_0001", 0.0, comment="wrong", correction="billing")
    give_feedback(project, "req_0002", 0.0, correction="billing")
    give_feedback(project, "req_0003", 0.0)  # no correction: the model's output is proposed
    reviewer = make_member(Role.REVIEWER)
    client = logged_in(reviewer)

    page = page_text(client.get(reverse("request_logs", args=[project.pk])))
    assert page.count("the feedback's correction, unless you write another") == 2
    client.post(
        reverse("request_logs_send", args=[project.pk]),
        {
            "request": ["req_0001", "req_0002", "req_0003"],
            "dataset": dataset.pk,
            "correction-req_0002": "refunds",
        },
    )

    examples = {e.metadata["request_id"]: e for e in Example.objects.filter(dataset=dataset)}
    from_feedback, from_reviewer, uncorrected = (
        examples["req_0001"],
        examples["req_0002"],
        examples["req_0003"],
    )
    assert from_feedback.messages[-1] == {"role": "assistant", "content": "billing"}
    assert from_feedback.metadata["correction_by"] == "feedback"
    assert from_feedback.metadata["feedback_score"] == 0.0
    assert from_feedback.metadata["feedback_comment"] == "wrong"
    assert from_feedback.metadata["model_output"] == "shipping"
    assert from_feedback.origin_kind == OriginKind.PRODUCTION_FEEDBACK
    assert from_reviewer.messages[-1]["content"] == "refunds"
    assert from_reviewer.metadata["correction_by"] == "reviewer"
    assert uncorrected.messages[-1]["content"] == "shipping"
    assert uncorrected.metadata["correction_by"] == "" and not uncorrected.metadata["corrected"]

    # The review queue's card says where the example came from.
    card = client.get(
        reverse("review_queue", args=[project.pk, dataset.pk]),
        {"example": from_feedback.pk},
    )
    provenance = squeezed(page_text(card).split('id="card-provenance"')[1].split("</p>")[0])
    assert "From production request <code>req_0001</code>" in provenance
    assert "The proposed answer is the application's correction." in provenance


def test_feedback_text_is_escaped(project: Project, make_member: Callable[..., User]) -> None:
    log(project, 1, at=timezone.now())
    give_feedback(project, "req_0001", 0.0, comment=XSS, correction=XSS, caller_user=XSS)
    OutcomeEvent.objects.create(project=project, request_id="req_0001", name=XSS)
    html = logged_in(make_member(Role.REVIEWER)).get(reverse("request_logs", args=[project.pk]))
    text = html.content.decode()
    assert XSS not in text and text.count(XSS_ESCAPED) >= 4


@pytest.mark.parametrize("role", list(Role))
def test_every_role_reads_feedback_and_filters_by_it_and_only_senders_send_its_correction(
    project: Project, make_member: Callable[..., User], dataset: Dataset, role: Role
) -> None:
    log(project, 1, at=timezone.now())
    log(project, 2, at=timezone.now())
    give_feedback(project, "req_0001", 0.0, correction="billing")
    client = logged_in(make_member(role))

    page = client.get(reverse("request_logs", args=[project.pk]), {"feedback": "corrected"})

    assert page.status_code == 200
    html = squeezed(page_text(page))
    assert re.findall(r'<tr id="request-(req_\d+)">', html) == ["req_0001"]
    assert '<span class="muted">should be:</span> billing' in html
    may_send = role in SENDERS
    assert ('name="correction-req_0001"' in html) is may_send
    sent = client.post(
        reverse("request_logs_send", args=[project.pk]),
        {"request": "req_0001", "dataset": dataset.pk},
    )
    assert sent.status_code == (302 if may_send else 403)
    proposed = [e.messages[-1]["content"] for e in Example.objects.filter(dataset=dataset)]
    assert proposed == (["billing"] if may_send else [])


# --- the shadow arm's rows ----------------------------------------------------------------------


def log_with_a_shadow(project: Project) -> None:
    """Two answered requests and the shadow arm's mirror of the first, answered to no one."""
    now = timezone.now()
    log(project, 1, at=now - timedelta(seconds=2), experiment_arm="control", output="billing")
    log(project, 2, at=now - timedelta(seconds=1), experiment_arm="challenger")
    log(project, 3, at=now, experiment_arm="shadow", shadow_of="req_0001", output="refunds")


def test_the_traffic_filter_shows_what_callers_were_answered_unless_asked_for_shadows(
    project: Project,
) -> None:
    log_with_a_shadow(project)

    def ids(**filters: object) -> list[str]:
        rows = request_logs_filtered(project, RequestLogFilters(**filters))  # type: ignore[arg-type]
        return [row.request_id for row in request_log_page(rows).rows]

    assert ids() == ["req_0002", "req_0001"]
    assert ids(traffic=TrafficFilter.ANSWERED) == ["req_0002", "req_0001"]
    assert ids(traffic=TrafficFilter.SHADOW) == ["req_0003"]
    assert ids(traffic=TrafficFilter.ALL) == ["req_0003", "req_0002", "req_0001"]
    # The arm filter within each: the shadow arm's rows are not answered traffic.
    assert ids(experiment_arm="shadow") == []
    assert ids(experiment_arm="shadow", traffic=TrafficFilter.SHADOW) == ["req_0003"]


def test_shadow_pages_walk_every_shadow_row_once(project: Project) -> None:
    start = timezone.now()
    for n in range(30):
        log(project, n, at=start - timedelta(seconds=n // 3), shadow_of="req_9999" if n % 4 else "")
    shadows = [f"req_{n:04d}" for n in range(30) if n % 4]
    for size in (1, 4, 7):
        shown = walk(project, RequestLogFilters(traffic=TrafficFilter.SHADOW), size)
        assert sorted(shown) == shadows and len(set(shown)) == len(shown)
        answered = walk(project, RequestLogFilters(), size)
        assert len(answered) == 30 - len(shadows) and not set(answered) & set(shadows)


@pytest.mark.parametrize("role", list(Role))
def test_every_member_sees_shadow_rows_marked_when_asking_for_them(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    log_with_a_shadow(project)
    client = logged_in(make_member(role))
    url = reverse("request_logs", args=[project.pk])

    answered = client.get(url)
    assert answered.status_code == 200
    assert re.findall(r'<tr id="request-(req_\d+)">', answered.content.decode()) == [
        "req_0002",
        "req_0001",
    ]
    assert "request-shadow" not in answered.content.decode()

    shadows = client.get(url, {"traffic": "shadow"})
    assert shadows.status_code == 200
    html = squeezed(page_text(shadows))
    assert re.findall(r'<tr id="request-(req_\d+)">', html) == ["req_0003"]
    assert "shadow: mirrors <code>req_0001</code>, answered to no one" in html
    assert '<option value="shadow" selected>' in html

    everything = squeezed(page_text(client.get(url, {"traffic": "all"})))
    assert re.findall(r'<tr id="request-(req_\d+)">', everything) == [
        "req_0003",
        "req_0002",
        "req_0001",
    ]
    assert everything.count('class="request-shadow"') == 1


def test_a_traffic_value_that_is_not_one_is_a_400_naming_the_field(
    project: Project, make_member: Callable[..., User]
) -> None:
    client = logged_in(make_member(Role.MANAGER))
    refused = client.get(reverse("request_logs", args=[project.pk]), {"traffic": "mirrors"})
    assert refused.status_code == 400 and b"traffic" in refused.content


def test_an_outsider_gets_404_for_the_shadow_rows_too(
    project: Project, make_member: Callable[..., User]
) -> None:
    log_with_a_shadow(project)
    outsider = make_member(Role.ADMIN, target=Project.objects.create(name="Other"))
    page = logged_in(outsider).get(
        reverse("request_logs", args=[project.pk]), {"traffic": "shadow"}
    )
    assert page.status_code == 404 and b"req_0003" not in page.content
