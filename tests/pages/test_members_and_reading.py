"""Roles as the README documents them, through the pages: admins manage members on a members
page (audited), and managers read every example, history included, without a way to decide."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import (
    Dataset,
    Example,
    ExampleStatus,
    ReviewAction,
    ReviewDecision,
    ReviewVote,
    Verdict,
)
from datasets.services import example_review
from ftportal.models import AuditAction, AuditEntry, Membership, Project
from ftportal.roles import Role
from tests.factories import TICKETS, chat

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "correct-horse-battery-staple-42"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def members_page(project: Project) -> str:
    return reverse("members", args=[project.pk])


def state() -> tuple[list[tuple[int, int, str]], int, int]:
    members = sorted(Membership.objects.values_list("project", "user", "role"))
    return members, User.objects.count(), AuditEntry.objects.count()


# --- the members page -------------------------------------------------------------------------


@pytest.fixture
def admin_user(make_member: Callable[..., User]) -> User:
    return make_member(Role.ADMIN)


def test_an_admin_adds_an_existing_user_and_the_audit_log_shows_it(
    project: Project, admin_user: User
) -> None:
    User.objects.create_user(username="newcomer", password="pw")
    client = logged_in(admin_user)

    response = client.post(
        members_page(project), {"operation": "add", "username": "newcomer", "role": "ml_lead"}
    )

    assert response.status_code == 302
    assert Membership.objects.get(project=project, user__username="newcomer").role == "ml_lead"
    html = client.get(members_page(project)).content.decode()
    assert "Added newcomer as ML lead." in html
    log = html.split('id="audit-log"')[1]
    row = "<td>{}</td><td>added a member</td><td>newcomer</td><td>—</td><td>ML lead</td>"
    assert row.format(admin_user.username) in log


def test_a_new_users_generated_password_is_shown_once_and_works(
    project: Project, admin_user: User
) -> None:
    client = logged_in(admin_user)

    response = client.post(
        members_page(project), {"operation": "create", "username": "fresh", "role": "reviewer"}
    )

    assert response.status_code == 200
    match = re.search(r'id="generated-password-value">([^<]+)<', response.content.decode())
    assert match is not None
    password = unescape(match.group(1))
    assert Client().login(username="fresh", password=password)
    assert password not in client.get(members_page(project)).content.decode()
    assert AuditEntry.objects.get().action == AuditAction.USER_CREATED


def test_an_admin_may_choose_the_new_users_password(project: Project, admin_user: User) -> None:
    response = logged_in(admin_user).post(
        members_page(project),
        {
            "operation": "create",
            "username": "chosen",
            "role": "manager",
            "password": STRONG_PASSWORD,
        },
    )
    assert response.status_code == 302
    assert Client().login(username="chosen", password=STRONG_PASSWORD)
    assert Membership.objects.get(user__username="chosen").role == Role.MANAGER


def test_changing_a_role_and_removing_a_member_are_recorded_before_and_after(
    project: Project, admin_user: User, make_member: Callable[..., User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    client = logged_in(admin_user)

    client.post(
        members_page(project), {"operation": "change", "user": reviewer.pk, "role": "ml_lead"}
    )
    assert Membership.objects.get(project=project, user=reviewer).role == Role.ML_LEAD
    client.post(members_page(project), {"operation": "remove", "user": reviewer.pk})
    assert not Membership.objects.filter(project=project, user=reviewer).exists()

    log = client.get(members_page(project)).content.decode().split('id="audit-log"')[1]
    assert f"<td>removed a member</td><td>{reviewer.username}</td><td>ML lead</td><td>—</td>" in log
    assert (
        f"<td>changed a role</td><td>{reviewer.username}</td><td>Reviewer</td><td>ML lead</td>"
        in log
    )
    assert log.index("removed a member") < log.index("changed a role")  # newest first


@pytest.mark.parametrize("operation", ["change", "remove"])
def test_the_page_refuses_to_lose_the_last_admin_and_says_why(
    project: Project, admin_user: User, operation: str
) -> None:
    before = state()
    response = logged_in(admin_user).post(
        members_page(project), {"operation": operation, "user": admin_user.pk, "role": "manager"}
    )
    assert response.status_code == 409
    assert "is the last admin" in response.content.decode()
    assert state() == before


def test_a_bad_username_is_refused_with_the_field_named(project: Project, admin_user: User) -> None:
    before = state()
    response = logged_in(admin_user).post(
        members_page(project),
        {"operation": "create", "username": "<script>x</script>", "role": "reviewer"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "username:" in html
    assert "<script>x</script>" not in html
    assert state() == before


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ML_LEAD, Role.MANAGER], ids=lambda r: r.value)
def test_only_admins_reach_the_members_page(
    project: Project, make_member: Callable[..., User], admin_user: User, role: Role
) -> None:
    client = logged_in(make_member(role))
    before = state()
    assert client.get(members_page(project)).status_code == 403
    response = client.post(
        members_page(project), {"operation": "change", "user": admin_user.pk, "role": "reviewer"}
    )
    assert response.status_code == 403
    assert state() == before
    detail = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert 'id="members-link"' not in detail


def test_a_non_member_gets_404_and_an_admin_finds_the_page_from_the_project(
    project: Project, admin_user: User
) -> None:
    outsider = logged_in(User.objects.create_user(username="outsider", password="pw"))
    assert outsider.get(members_page(project)).status_code == 404
    detail = logged_in(admin_user).get(reverse("project_detail", args=[project.pk]))
    assert f'href="{members_page(project)}"' in detail.content.decode()


# --- managers read the examples ---------------------------------------------------------------


@dataclass
class Queue:
    dataset: Dataset
    pending: Example
    decided: Example
    disputed: Example


@pytest.fixture
def queue(project: Project, make_member: Callable[..., User]) -> Queue:
    dataset = Dataset.objects.create(project=project, name="tickets")
    pending = Example.objects.create(dataset=dataset, messages=chat(*TICKETS[0]))
    decided = Example.objects.create(dataset=dataset, messages=chat(*TICKETS[1]))
    reviewer = make_member(Role.REVIEWER)
    example_review(
        example=decided,
        user=reviewer,
        action=ReviewAction.EDIT,
        new_answer='{"category": "network"}',
        comment="was the wrong label",
    )
    disputed = Example.objects.create(
        dataset=dataset, messages=chat(*TICKETS[2]), status=ExampleStatus.DISPUTED, revision=1
    )
    ReviewVote.objects.create(
        example=disputed, reviewer=reviewer, verdict=Verdict.APPROVE, answer="A"
    )
    return Queue(dataset, pending, decided, disputed)


def queue_url(queue: Queue) -> str:
    return reverse("review_queue", args=[queue.dataset.project_id, queue.dataset.pk])


DECIDE_CONTROLS = [
    'id="approve-button"',
    'id="reject-button"',
    'id="edit-button"',
    'id="comment-form"',
]
# Bulk actions are the ML lead's (roles.BULK_REVIEW): a reviewer decides one example at a time.
BULK_CONTROLS = ['id="bulk"', 'id="bulk-form"']
WRITE_CONTROLS = DECIDE_CONTROLS + BULK_CONTROLS


def test_a_reviewer_sees_the_decide_controls_but_not_the_bulk_actions(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    # The control for the manager test below: these markers are what a decider gets.
    html = logged_in(make_member(Role.REVIEWER)).get(queue_url(queue)).content.decode()
    assert all(control in html for control in DECIDE_CONTROLS)
    assert not [control for control in BULK_CONTROLS if control in html]
    assert 'id="read-only-notice"' not in html


def test_an_ml_lead_sees_the_decide_controls_and_the_bulk_actions(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    html = logged_in(make_member(Role.ML_LEAD)).get(queue_url(queue)).content.decode()
    assert all(control in html for control in WRITE_CONTROLS)


def test_a_manager_reads_the_queue_and_an_examples_history_with_no_way_to_decide(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    client = logged_in(make_member(Role.MANAGER))

    first = client.get(queue_url(queue))
    history = client.get(queue_url(queue), {"example": queue.decided.pk})

    assert first.status_code == 200
    html = first.content.decode()
    assert 'id="read-only-notice"' in html
    assert TICKETS[0][0] in unescape(html)
    assert not [control for control in WRITE_CONTROLS if control in html]
    card = unescape(history.content.decode())
    assert 'id="edit-history"' in card
    assert "was the wrong label" in card
    assert not [control for control in WRITE_CONTROLS if control in card]


def test_a_manager_reads_the_disputed_votes_without_the_buttons_that_take_one(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    html = (
        logged_in(make_member(Role.MANAGER))
        .get(queue_url(queue), {"status": "disputed", "assignee": "any"})
        .content.decode()
    )
    assert 'id="votes"' in html
    assert "take-vote" not in html


def test_every_review_write_by_a_manager_is_refused_and_changes_nothing(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    client = logged_in(make_member(Role.MANAGER))
    project_id = queue.dataset.project_id
    before = (
        sorted(Example.objects.values_list("id", "status", "revision", "messages")),
        ReviewDecision.objects.count(),
    )

    answers = [
        client.post(
            reverse("review_decide", args=[project_id, queue.pending.pk]), {"action": "approve"}
        ).status_code,
        client.post(
            reverse("review_comment", args=[project_id, queue.pending.pk]), {"body": "hm"}
        ).status_code,
        client.get(
            reverse("review_bulk", args=[project_id, queue.dataset.pk]), {"bulk_action": "approve"}
        ).status_code,
        client.post(
            f"/api/projects/{project_id}/examples/{queue.pending.pk}/review/",
            {"action": "approve"},
            content_type="application/json",
        ).status_code,
    ]

    assert answers == [403, 403, 403, 403]
    assert (
        sorted(Example.objects.values_list("id", "status", "revision", "messages")),
        ReviewDecision.objects.count(),
    ) == before


def test_the_dataset_page_links_a_manager_to_the_examples(
    queue: Queue, make_member: Callable[..., User]
) -> None:
    html = (
        logged_in(make_member(Role.MANAGER))
        .get(reverse("dataset_detail", args=[queue.dataset.project_id, queue.dataset.pk]))
        .content.decode()
    )
    assert 'id="read-examples-link"' in html
