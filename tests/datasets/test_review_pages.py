"""Review workflow through the pages and the API: roles, filters in URLs, escaping, bulk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import (
    Dataset,
    Example,
    ExampleAssignment,
    ExampleComment,
    ExampleStatus,
    ReviewDecision,
    ReviewVote,
    Tag,
    Verdict,
)
from datasets.review.services import BulkAction
from ftportal.roles import Action, Role
from tests.factories import TICKETS, chat

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
XSS = "<script>window.__xss=1</script>"
XSS_ESCAPED = "&lt;script&gt;window.__xss=1&lt;/script&gt;"
REVIEWERS = frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN})
LEADS = frozenset({Role.ML_LEAD, Role.ADMIN})
# Reviewers vote blind; managers read every vote and decide nothing.
VOTE_READERS = frozenset({Role.ML_LEAD, Role.MANAGER, Role.ADMIN})


@dataclass
class World:
    dataset: Dataset
    pending: Example
    disputed: Example
    assignee: User

    @property
    def project_id(self) -> int:
        return self.dataset.project_id


@pytest.fixture
def world(project, make_member) -> World:
    dataset = Dataset.objects.create(project=project, name="tickets")
    pending = Example.objects.create(dataset=dataset, messages=chat(*TICKETS[0]))
    Example.objects.create(dataset=dataset, messages=chat(*TICKETS[1]))
    disputed = Example.objects.create(
        dataset=dataset, messages=chat(*TICKETS[2]), status=ExampleStatus.DISPUTED, revision=1
    )
    first, second = make_member(Role.REVIEWER), make_member(Role.REVIEWER)
    ReviewVote.objects.create(example=disputed, reviewer=first, verdict=Verdict.APPROVE, answer="A")
    ReviewVote.objects.create(example=disputed, reviewer=second, verdict=Verdict.REJECT, answer="")
    return World(dataset, pending, disputed, assignee=first)


def db_state() -> dict[str, object]:
    return {
        "examples": sorted(Example.objects.values_list("id", "status", "revision", "messages")),
        "decisions": ReviewDecision.objects.count(),
        "votes": ReviewVote.objects.count(),
        "assignments": ExampleAssignment.objects.count(),
        "comments": ExampleComment.objects.count(),
        "tags": sorted(Tag.objects.values_list("name", flat=True)),
        "tagged": Example.tags.through.objects.count(),
        "settings": list(Dataset.objects.values_list("review_overlap", "guidelines")),
    }


@dataclass(frozen=True)
class Write:
    name: str
    allowed: frozenset[Role]
    request: Callable[[World], tuple[str, dict[str, Any]]]
    success: int
    api: bool = False


def page(name: str, *args: Any, query: str = "") -> str:
    return reverse(name, args=list(args)) + (f"?{query}" if query else "")


def api(w: World, path: str) -> str:
    return f"/api/projects/{w.project_id}/{path}"


def pending_count(w: World) -> int:
    """What an API bulk action on the default (pending) queue must confirm it acts on."""
    return w.dataset.examples.filter(status=ExampleStatus.PENDING).count()


WRITES = [
    Write(
        "settings page",
        LEADS,
        lambda w: (
            page("review_setup", w.project_id, w.dataset.pk),
            {"review_overlap": 2, "guidelines": "Be kind."},
        ),
        302,
    ),
    # Bulk actions are the lead's (roles.BULK_REVIEW); reviewers decide one example at a time.
    Write(
        "bulk approve page",
        LEADS,
        lambda w: (
            page("review_bulk", w.project_id, w.dataset.pk, query="assignee=any"),
            {"bulk_action": "approve"},
        ),
        302,
    ),
    Write(
        "bulk tag page",
        LEADS,
        lambda w: (
            page("review_bulk", w.project_id, w.dataset.pk, query="assignee=any"),
            {"bulk_action": "tag", "tag_name": "urgent"},
        ),
        302,
    ),
    Write(
        "bulk assign page",
        LEADS,
        lambda w: (
            page("review_bulk", w.project_id, w.dataset.pk, query="assignee=any"),
            {"bulk_action": "assign", "reviewers": [w.assignee.username]},
        ),
        302,
    ),
    Write(
        "comment page",
        REVIEWERS,
        lambda w: (page("review_comment", w.project_id, w.pending.pk), {"body": "hm"}),
        302,
    ),
    Write(
        "adjudicate page",
        LEADS,
        lambda w: (
            page("review_decide", w.project_id, w.disputed.pk),
            {"action": "reject", "revision": 1},
        ),
        302,
    ),
    Write(
        "settings api",
        LEADS,
        lambda w: (
            api(w, f"datasets/{w.dataset.pk}/review-settings/"),
            {"review_overlap": 3, "guidelines": "x"},
        ),
        200,
        api=True,
    ),
    Write(
        "bulk approve api",
        LEADS,
        lambda w: (
            api(w, f"datasets/{w.dataset.pk}/review-bulk/"),
            {"action": "approve", "expected_count": pending_count(w)},
        ),
        200,
        api=True,
    ),
    Write(
        "bulk assign api",
        LEADS,
        lambda w: (
            api(w, f"datasets/{w.dataset.pk}/review-bulk/"),
            {
                "action": "assign",
                "reviewers": [w.assignee.username],
                "expected_count": pending_count(w),
            },
        ),
        200,
        api=True,
    ),
    Write(
        "comment api",
        REVIEWERS,
        lambda w: (api(w, f"examples/{w.pending.pk}/comments/"), {"body": "hm"}),
        201,
        api=True,
    ),
    Write(
        "adjudicate api",
        LEADS,
        lambda w: (
            api(w, f"examples/{w.disputed.pk}/review/"),
            {"action": "reject", "revision": w.disputed.revision},
        ),
        200,
        api=True,
    ),
]


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("write", WRITES, ids=lambda w: w.name)
def test_each_role_may_take_exactly_its_review_actions(
    world: World, make_member, role: Role, write: Write
) -> None:
    client = Client()
    client.force_login(make_member(role))
    url, body = write.request(world)
    before = db_state()

    if write.api:
        response = client.post(url, body, content_type="application/json")
    else:
        response = client.post(url, body)

    if role in write.allowed:
        assert response.status_code == write.success, response.content
        assert db_state() != before
    else:
        assert response.status_code == 403, response.content
        assert db_state() == before


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_reading_the_disputed_queue_and_votes_is_for_leads_and_managers(
    world: World, make_member, role: Role
) -> None:
    client = Client()
    client.force_login(make_member(role))
    queue = client.get(
        page("review_queue", world.project_id, world.dataset.pk), {"status": "disputed"}
    )
    votes = client.get(api(world, f"examples/{world.disputed.pk}/votes/"))
    expected = 200 if role in VOTE_READERS else 403
    assert (queue.status_code, votes.status_code) == (expected, expected)
    setup = client.get(page("review_setup", world.project_id, world.dataset.pk))
    assert setup.status_code == 200  # the agreement panel is for everyone to read


def test_a_non_member_gets_404_and_changes_nothing(world: World) -> None:
    client = Client()
    client.force_login(User.objects.create_user(username="outsider", password="pw"))
    before = db_state()
    for write in WRITES:
        url, body = write.request(world)
        response = (
            client.post(url, body, content_type="application/json")
            if write.api
            else (client.post(url, body))
        )
        assert response.status_code == 404, write.name
    assert db_state() == before


# --- the queue --------------------------------------------------------------------------------


def test_the_filter_stays_in_skip_and_decision_urls_and_picks_the_next_match(
    world: World, make_member
) -> None:
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    extra = Example.objects.create(
        dataset=world.dataset, messages=chat("charged twice again", "x", "y")
    )
    url = page("review_queue", world.project_id, world.dataset.pk)
    html = client.get(url, {"q": "charged"}).content.decode()
    assert f'data-example-id="{world.pending.pk}"' in html
    assert f"?q=charged&amp;after={world.pending.pk}" in html  # the skip link keeps the filter
    decide = page("review_decide", world.project_id, world.pending.pk, query="q=charged")
    assert f'hx-post="{decide}"' in html
    assert "1 pending · 0 approved · 0 rejected" not in html  # counts follow the filter
    assert "2 pending · 0 approved · 0 rejected" in html

    response = client.post(decide, {"action": "approve", "revision": 0}, headers=HTMX)
    fragment = response.content.decode()
    assert f'data-example-id="{extra.pk}"' in fragment
    assert "1 pending · 1 approved · 0 rejected" in fragment


def test_a_reviewer_with_assignments_sees_their_own_queue_by_default(
    world: World, make_member
) -> None:
    lead = make_member(Role.ML_LEAD)
    second = Example.objects.filter(dataset=world.dataset).order_by("id")[1]
    ExampleAssignment.objects.create(example=second, reviewer=world.assignee, assigned_by=lead)
    client = Client()
    client.force_login(world.assignee)
    url = page("review_queue", world.project_id, world.dataset.pk)
    assert f'data-example-id="{second.pk}"' in client.get(url).content.decode()
    everyone = client.get(url, {"assignee": "any"}).content.decode()
    assert f'data-example-id="{world.pending.pk}"' in everyone


def test_the_adjudicator_sees_the_votes_side_by_side_with_keys(world: World, make_member) -> None:
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    html = client.get(
        page("review_queue", world.project_id, world.dataset.pk), {"status": "disputed"}
    ).content.decode()
    assert f'data-example-id="{world.disputed.pk}"' in html
    assert 'id="votes"' in html and world.assignee.username in html
    assert 'data-key="1"' in html  # approve with reviewer 1's answer
    assert 'data-key="2"' not in html  # reviewer 2 rejected: no answer to take


def test_a_reviewer_cannot_decide_a_disputed_example_alone(world: World) -> None:
    client = Client()
    client.force_login(world.assignee)
    before = db_state()
    response = client.post(
        page("review_decide", world.project_id, world.disputed.pk),
        {"action": "approve", "revision": 1},
        headers=HTMX,
    )
    assert response.status_code == 403
    assert db_state() == before


def test_under_overlap_a_decision_is_a_vote_and_the_card_says_so(world: World, make_member) -> None:
    world.dataset.review_overlap = 2
    world.dataset.save()
    client = Client()
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    response = client.post(
        page("review_decide", world.project_id, world.pending.pk),
        {"action": "approve", "revision": 0},
        headers=HTMX,
    )
    assert "your vote (approve) is recorded" in response.content.decode()
    assert f'data-example-id="{world.pending.pk}"' not in response.content.decode()
    world.pending.refresh_from_db()
    assert world.pending.status == ExampleStatus.PENDING
    assert ReviewVote.objects.filter(reviewer=reviewer).count() == 1


# --- escaping ---------------------------------------------------------------------------------


def test_guidelines_render_markdown_but_never_html_or_script_links(
    world: World, make_member
) -> None:
    world.dataset.guidelines = (
        f"# Rules\n\n**Bold** {XSS}\n\n[click](javascript:alert(1)) [ok](https://example.com)"
    )
    world.dataset.save()
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    for url in (
        page("review_queue", world.project_id, world.dataset.pk),
        page("review_setup", world.project_id, world.dataset.pk),
    ):
        html = client.get(url).content.decode()
        assert "<h1>Rules</h1>" in html and "<strong>Bold</strong>" in html
        assert XSS not in html and XSS_ESCAPED in html
        assert 'href="javascript:' not in html
        assert '<a href="https://example.com">ok</a>' in html


def test_comments_and_answer_diffs_are_escaped(world: World, make_member) -> None:
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    response = client.post(
        page("review_comment", world.project_id, world.pending.pk), {"body": XSS}, headers=HTMX
    )
    html = response.content.decode()
    assert XSS not in html and XSS_ESCAPED in html

    diff = client.post(
        page("review_diff", world.project_id, world.pending.pk), {"answer": f"{XSS} billing"}
    ).content.decode()
    assert XSS not in diff
    assert "<ins>&lt;script&gt;window.__xss=1&lt;/script&gt;" in diff
    assert "<del>" in diff


def test_an_edit_shows_the_diff_and_history_on_the_card(world: World, make_member) -> None:
    client = Client()
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    client.post(
        page("review_decide", world.project_id, world.pending.pk),
        {"action": "edit", "answer": '{"category": "billing", "priority": "low"}', "revision": 0},
        headers=HTMX,
    )
    html = client.get(
        page("review_queue", world.project_id, world.dataset.pk),
        {"example": str(world.pending.pk), "status": "approved"},
    ).content.decode()
    assert 'id="diff-to-original"' in html
    assert "<del>&quot;high&quot;}</del><ins>&quot;low&quot;}</ins>" in html
    assert 'id="edit-history"' in html and reviewer.username in html


# --- bulk -------------------------------------------------------------------------------------


def test_the_bulk_confirmation_states_the_count_and_then_acts(world: World, make_member) -> None:
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    url = page("review_bulk", world.project_id, world.dataset.pk)
    confirm = client.get(url, {"bulk_action": "approve", "assignee": "any"}).content.decode()
    assert "This will approve 2 example(s)" in confirm
    token = confirm.split('name="selection_token" value="')[1].split('"')[0]
    response = client.post(
        f"{url}?assignee=any", {"bulk_action": "approve", "selection_token": token}
    )
    assert response.status_code == 302
    assert Example.objects.filter(status=ExampleStatus.APPROVED).count() == 2


def test_a_bulk_reject_that_one_example_cannot_take_is_refused_whole(
    world: World, make_member
) -> None:
    Example.objects.filter(pk=world.pending.pk).update(status=ExampleStatus.REJECTED)
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    url = page("review_bulk", world.project_id, world.dataset.pk)
    confirm = client.get(url, {"bulk_action": "reject", "status": "any"}).content.decode()
    assert f"Example {world.pending.pk} (rejected)" in confirm
    assert 'id="bulk-confirm"' not in confirm
    before = db_state()
    response = client.post(f"{url}?status=any", {"bulk_action": "reject"})
    assert response.status_code == 409
    assert f"{world.pending.pk} (rejected)" in response.content.decode()
    assert db_state() == before


def test_the_api_bulk_dry_run_and_stale_token(world: World, make_member) -> None:
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    url = api(world, f"datasets/{world.dataset.pk}/review-bulk/")
    body = {"action": "tag", "tag": "later", "dry_run": True, "filter": {"q": "charged"}}
    dry = client.post(url, body, content_type="application/json").json()
    assert (dry["count"], dry["changed"]) == (1, 0)
    assert not Tag.objects.exists()
    Example.objects.filter(pk=world.pending.pk).update(revision=5)  # someone decided meanwhile
    stale = {
        **body,
        "dry_run": False,
        "selection_token": dry["selection_token"],
        "expected_count": dry["count"],
    }
    assert client.post(url, stale, content_type="application/json").status_code == 409
    assert not Tag.objects.exists()


@pytest.mark.parametrize("surface", ["page", "api"])
def test_a_bulk_assign_to_nobody_is_refused_before_confirming_on_page_and_api(
    world: World, make_member, surface: str
) -> None:
    """Page and API share one reviewer lookup: an empty list is refused by both, before the
    confirmation (the page used to show a confirmation that could only fail)."""
    client = Client()
    client.force_login(make_member(Role.ML_LEAD))
    before = db_state()
    if surface == "page":
        url = page("review_bulk", world.project_id, world.dataset.pk)
        response = client.get(url, {"bulk_action": "assign", "assignee": "any"})
    else:
        url = api(world, f"datasets/{world.dataset.pk}/review-bulk/")
        body = {"action": "assign", "reviewers": [], "dry_run": True}
        response = client.post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert "reviewers: none given" in response.content.decode()
    assert db_state() == before


@pytest.mark.parametrize(
    ("action", "overlap", "needed"),
    [
        ("approve", 1, Action.BULK_REVIEW),
        ("reject", 1, Action.BULK_REVIEW),
        ("tag", 1, Action.BULK_REVIEW),
        ("tag", 2, Action.BULK_REVIEW),
        ("assign", 1, Action.ASSIGN),
        ("approve", 2, Action.ADJUDICATE),
        ("reject", 3, Action.ADJUDICATE),
    ],
)
def test_each_bulk_action_carries_the_permission_it_needs(
    world: World, action: str, overlap: int, needed: Action
) -> None:
    world.dataset.review_overlap = overlap
    assert BulkAction(action).permission(world.dataset) is needed


def test_the_api_queue_returns_the_next_example_and_the_counts(world: World, make_member) -> None:
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    data = client.get(
        api(world, f"datasets/{world.dataset.pk}/review-queue/"), {"q": "charged"}
    ).json()
    assert data["next"]["id"] == world.pending.pk
    assert data["matching"] == 1
    assert data["counts"]["pending"] == 1


def test_a_queue_too_large_to_count_inline_fetches_its_counts_separately(
    world: World, make_member, monkeypatch
) -> None:
    monkeypatch.setattr("datasets.review.views.COUNT_INLINE_LIMIT", 0)
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = page("review_queue", world.project_id, world.dataset.pk)
    card = client.get(url, {"q": "charged"}, headers=HTMX).content.decode()
    assert "Counting…" in card
    assert f'hx-get="{page("review_counts", world.project_id, world.dataset.pk)}?q=charged"' in card
    counts = client.get(
        page("review_counts", world.project_id, world.dataset.pk), {"q": "charged"}
    ).content.decode()
    assert "1 pending · 0 approved · 0 rejected" in counts
    assert "1 pending example(s) match this filter" in counts


@pytest.mark.parametrize(
    ("read", "status"),
    [("counts page", 200), ("diff page", 403), ("queue api", 200)],
)
def test_a_manager_reads_the_queue_but_not_the_editors_diff(
    world: World, make_member, read: str, status: int
) -> None:
    client = Client()
    client.force_login(make_member(Role.MANAGER))
    before = db_state()
    if read == "counts page":
        response = client.get(page("review_counts", world.project_id, world.dataset.pk))
    elif read == "diff page":
        # The diff is the edit form's helper: a manager never edits.
        response = client.post(
            page("review_diff", world.project_id, world.pending.pk), {"answer": "x"}
        )
    else:
        response = client.get(api(world, f"datasets/{world.dataset.pk}/review-queue/"))
    assert response.status_code == status
    assert db_state() == before


def test_everyone_in_the_project_reads_agreement_settings_and_comments(
    world: World, make_member
) -> None:
    client = Client()
    client.force_login(make_member(Role.MANAGER))
    for path in ("agreement/", "review-settings/"):
        assert client.get(api(world, f"datasets/{world.dataset.pk}/{path}")).status_code == 200
    comments = client.get(api(world, f"examples/{world.pending.pk}/comments/"))
    assert comments.status_code == 200 and comments.json()["results"] == []


def test_an_example_id_that_is_not_an_id_is_a_400_naming_it(world: World, make_member) -> None:
    # One rule for ids in a page's query string (ftportal.http.query_id): what is not an id is a
    # 400 that names the parameter ("²" passes str.isdigit but not int(), once a 500).
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = page("review_queue", world.project_id, world.dataset.pk)
    for value in ("abc", "²", str(2**64)):
        response = client.get(url, {"example": value})
        assert response.status_code == 400
        assert "example: expected an id" in response.content.decode()
    assert client.get(url, {"after": "²"}).status_code == 400
    assert client.get(url, {"example": 10**9}).status_code == 404
    assert client.get(url, {"status": "lost"}).status_code == 400


def test_an_unfiltered_queue_over_the_inline_limit_is_counted_separately(
    world: World, make_member, monkeypatch
) -> None:
    monkeypatch.setattr("datasets.review.selectors.COUNT_INLINE_LIMIT", 2)
    monkeypatch.setattr("datasets.review.views.COUNT_INLINE_LIMIT", 2)
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = page("review_queue", world.project_id, world.dataset.pk)
    assert "Counting…" in client.get(url, headers=HTMX).content.decode()  # 3 examples > 2
    narrowed = client.get(url, {"q": "charged"}, headers=HTMX).content.decode()
    assert "1 pending · 0 approved · 0 rejected" in narrowed
