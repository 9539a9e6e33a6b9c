"""Review workflow services and selectors: filters, assignment, votes, adjudication, bulk."""

from __future__ import annotations

from collections import Counter

import pytest

from datasets.models import (
    AnalysisRun,
    AnalysisStatus,
    Dataset,
    Example,
    ExampleAssignment,
    ExampleStatus,
    Finding,
    ReviewAction,
    ReviewDecision,
    ReviewVote,
    Severity,
    Tag,
    Verdict,
)
from datasets.review.selectors import (
    QueueFilter,
    agreement_summary,
    answer_diff,
    default_assignee,
    example_card,
    filtered_examples,
    next_in_queue,
    queue_counts,
    queue_examples,
    selection_preview,
)
from datasets.review.services import (
    example_comment_add,
    example_decide,
    example_vote,
    examples_assign,
    examples_bulk_review,
    examples_bulk_tag,
    refused_statuses,
    review_settings_update,
)
from datasets.services import example_review
from ftportal.errors import ApplicationError, ConflictError, PermissionDeniedError
from ftportal.roles import Role
from tests.factories import TICKETS, chat

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(project):
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def examples(dataset):
    return [
        Example.objects.create(dataset=dataset, messages=chat(*ticket), metadata={"lang": "en"})
        for ticket in TICKETS[:6]
    ]


@pytest.fixture
def reviewers(make_member):
    return [make_member(Role.REVIEWER) for _ in range(3)]


def ids(queryset) -> list[int]:
    return list(queryset.order_by("id").values_list("id", flat=True))


def answer_of(example: Example) -> str:
    example.refresh_from_db()
    return example.messages[-1]["content"]


# --- filters ----------------------------------------------------------------------------------


def test_each_filter_narrows_the_queue(dataset, examples, reviewers, make_member):
    lead = make_member(Role.ML_LEAD)
    me = reviewers[0]
    examples[1].metadata = {"lang": "de", "source": "mail", "n": 3}
    examples[1].save()
    urgent = Tag.objects.create(dataset=dataset, name="urgent")
    examples[2].tags.add(urgent)
    run = AnalysisRun.objects.create(
        dataset=dataset, base_model_key="m", status=AnalysisStatus.SUCCEEDED, created_by=lead
    )
    Finding.objects.create(
        run=run, example=examples[3], kind="pii_email", severity=Severity.WARNING, message="e-mail"
    )
    ExampleAssignment.objects.create(example=examples[4], reviewer=me, assigned_by=lead)
    example_review(example=examples[5], user=lead, action=ReviewAction.REJECT)

    def matching(**kwargs) -> list[int]:
        return ids(filtered_examples(dataset, QueueFilter(**kwargs), user=me))

    assert matching() == [e.pk for e in examples[:5]]
    assert matching(status="rejected") == [examples[5].pk]
    assert matching(status="any") == [e.pk for e in examples]
    assert matching(q="DASHBOARD shows") == [examples[1].pk]  # case-insensitive text search
    assert matching(meta="lang=de") == [examples[1].pk]
    assert matching(meta="source=mail") == [examples[1].pk]
    assert matching(meta="lang=fr") == []
    assert matching(meta="n=3") == [examples[1].pk]  # a number matches as written
    assert matching(tag="urgent") == [examples[2].pk]
    assert matching(finding="pii_email") == [examples[3].pk]
    assert matching(assignee="me") == [examples[4].pk]
    assert matching(assignee=me.username) == [examples[4].pk]
    assert matching(assignee="unassigned") == [e.pk for e in examples[:4]]
    assert matching(assignee="nobody-by-that-name") == []
    assert matching(q="charged", assignee="unassigned") == [examples[0].pk]


def test_a_finding_filter_reads_only_the_latest_successful_analysis(dataset, examples, make_member):
    lead = make_member(Role.ML_LEAD)
    old = AnalysisRun.objects.create(
        dataset=dataset, base_model_key="m", status=AnalysisStatus.SUCCEEDED, created_by=lead
    )
    Finding.objects.create(
        run=old, example=examples[0], kind="short_answer", severity=Severity.WARNING, message="x"
    )
    latest = AnalysisRun.objects.create(
        dataset=dataset, base_model_key="m", status=AnalysisStatus.SUCCEEDED, created_by=lead
    )
    Finding.objects.create(
        run=latest, example=examples[1], kind="short_answer", severity=Severity.WARNING, message="x"
    )
    AnalysisRun.objects.create(
        dataset=dataset, base_model_key="m", status=AnalysisStatus.FAILED, created_by=lead
    )
    found = filtered_examples(dataset, QueueFilter(finding="short_answer"), user=lead)
    assert ids(found) == [examples[1].pk]


def test_filters_come_from_the_query_and_go_back_into_it(reviewers):
    filters = QueueFilter.from_query(
        {"status": "approved", "q": " refund ", "tag": "x"}, default_assignee="me"
    )
    assert (filters.status, filters.q, filters.assignee) == ("approved", "refund", "me")
    assert filters.query == "status=approved&q=refund&tag=x"
    assert QueueFilter.from_query({"status": "all", "finding": "pii_email"}).status == "any"
    with pytest.raises(ApplicationError, match="status: 'lost'"):
        QueueFilter.from_query({"status": "lost"})
    with pytest.raises(ApplicationError, match="key=value"):
        QueueFilter.from_query({"meta": "lang"})


def test_counts_reflect_the_filter_and_the_queue_wraps_around(dataset, examples, reviewers):
    me = reviewers[0]
    example_review(example=examples[0], user=me, action=ReviewAction.APPROVE)
    billing = QueueFilter(q="billing")
    assert queue_counts(dataset, billing, user=me)["approved"] == 1
    assert queue_counts(dataset, billing, user=me)["pending"] == 1  # tickets 0 and 4 are billing
    queue = queue_examples(dataset, QueueFilter(), user=me)
    assert next_in_queue(queue, after_id=examples[5].pk) == examples[1]
    assert next_in_queue(queue, after_id=examples[1].pk) == examples[2]


# --- assignment -------------------------------------------------------------------------------


def test_assignment_is_round_robin_with_n_distinct_reviewers_each(
    dataset, examples, reviewers, make_member
):
    lead = make_member(Role.ML_LEAD)
    review_settings_update(dataset=dataset, review_overlap=2, guidelines="")
    created = examples_assign(
        dataset=dataset, examples=dataset.examples.all(), reviewers=reviewers, assigned_by=lead
    )
    assert created == 12
    per_example: dict[int, set[int]] = {}
    for a in ExampleAssignment.objects.all():
        per_example.setdefault(a.example_id, set()).add(a.reviewer_id)
    assert all(len(who) == 2 for who in per_example.values())
    assert len(per_example) == 6
    load = Counter(a.reviewer_id for a in ExampleAssignment.objects.all())
    assert sorted(load.values()) == [4, 4, 4]
    # Assigning again adds nothing: every example already has its two reviewers.
    assert (
        examples_assign(
            dataset=dataset, examples=dataset.examples.all(), reviewers=reviewers, assigned_by=lead
        )
        == 0
    )
    assert default_assignee(dataset, reviewers[0]) == "me"


def test_assignment_refuses_too_few_reviewers_and_non_members(
    dataset, examples, reviewers, make_member
):
    lead = make_member(Role.ML_LEAD)
    manager = make_member(Role.MANAGER)
    review_settings_update(dataset=dataset, review_overlap=3, guidelines="")
    with pytest.raises(ApplicationError, match="at least 3 reviewers"):
        examples_assign(
            dataset=dataset,
            examples=dataset.examples.all(),
            reviewers=reviewers[:2],
            assigned_by=lead,
        )
    with pytest.raises(ApplicationError, match="cannot review"):
        examples_assign(
            dataset=dataset,
            examples=dataset.examples.all(),
            reviewers=[*reviewers, manager],
            assigned_by=lead,
        )
    assert ExampleAssignment.objects.count() == 0


def test_overlap_outside_its_bounds_is_refused(dataset):
    with pytest.raises(ApplicationError, match="between 1 and 10"):
        review_settings_update(dataset=dataset, review_overlap=0, guidelines="")
    dataset.refresh_from_db()
    assert dataset.review_overlap == 1


# --- votes and adjudication -------------------------------------------------------------------


@pytest.fixture
def overlap_two(dataset):
    return review_settings_update(dataset=dataset, review_overlap=2, guidelines="")


def test_unanimous_approvals_decide_the_example_once_all_votes_are_in(
    overlap_two, examples, reviewers
):
    first, second, _ = reviewers
    example = examples[0]
    outcome = example_decide(example=example, user=first, action=ReviewAction.APPROVE)
    assert outcome.vote is not None and outcome.resolved == ""
    example.refresh_from_db()
    assert example.status == ExampleStatus.PENDING and example.revision == 0
    assert ReviewDecision.objects.count() == 0
    # The voter's queue no longer shows it; the other reviewer's still does.
    assert example.pk not in ids(queue_examples(overlap_two, QueueFilter(), user=first))
    assert example.pk in ids(queue_examples(overlap_two, QueueFilter(), user=second))

    outcome = example_decide(example=example, user=second, action=ReviewAction.APPROVE)
    assert outcome.resolved == "unanimous"
    example.refresh_from_db()
    assert example.status == ExampleStatus.APPROVED and example.revision == 1
    [decision] = ReviewDecision.objects.all()
    assert decision.action == ReviewAction.APPROVE and "Unanimous" in decision.comment


def test_the_same_edit_by_every_reviewer_is_approved_with_that_answer(
    overlap_two, examples, reviewers
):
    example = examples[0]
    for reviewer in reviewers[:2]:
        example_decide(
            example=example, user=reviewer, action=ReviewAction.EDIT, new_answer=" fixed "
        )
    assert answer_of(example) == "fixed"
    assert example.status == ExampleStatus.APPROVED
    assert ReviewDecision.objects.get().action == ReviewAction.EDIT


def test_different_votes_dispute_the_example_and_an_adjudicator_decides(
    overlap_two, examples, reviewers, make_member
):
    lead = make_member(Role.ML_LEAD)
    example = examples[0]
    example_decide(example=example, user=reviewers[0], action=ReviewAction.APPROVE)
    outcome = example_decide(
        example=example, user=reviewers[1], action=ReviewAction.EDIT, new_answer="other"
    )
    assert outcome.resolved == "disputed"
    example.refresh_from_db()
    assert example.status == ExampleStatus.DISPUTED and example.revision == 1
    assert ReviewDecision.objects.count() == 0
    assert agreement_summary(overlap_two).disputed == 1

    with pytest.raises(PermissionDeniedError, match="disputed"):
        example_decide(example=example, user=reviewers[2], action=ReviewAction.APPROVE)
    # A stale adjudication (made on the pending view, revision 0) is refused too.
    with pytest.raises(ConflictError):
        example_decide(
            example=example,
            user=lead,
            action=ReviewAction.REJECT,
            expected_revision=0,
            may_adjudicate=True,
        )
    outcome = example_decide(
        example=example,
        user=lead,
        action=ReviewAction.EDIT,
        new_answer="other",
        expected_revision=1,
        may_adjudicate=True,
    )
    assert outcome.vote is None
    assert answer_of(example) == "other"
    assert example.status == ExampleStatus.APPROVED
    assert ReviewDecision.objects.get().reviewer == lead


def test_a_reviewer_votes_once_and_only_on_pending_examples(overlap_two, examples, reviewers):
    example = examples[0]
    example_vote(example=example, user=reviewers[0], verdict=Verdict.REJECT)
    with pytest.raises(ConflictError, match="already voted"):
        example_vote(example=example, user=reviewers[0], verdict=Verdict.APPROVE)
    assert ReviewVote.objects.count() == 1
    example_vote(example=example, user=reviewers[1], verdict=Verdict.REJECT)
    example.refresh_from_db()
    assert example.status == ExampleStatus.REJECTED
    with pytest.raises(ConflictError, match="only pending examples take votes"):
        example_vote(example=example, user=reviewers[2], verdict=Verdict.APPROVE)
    assert ReviewVote.objects.count() == 2


def test_a_vote_on_a_stale_revision_is_refused(overlap_two, examples, reviewers, make_member):
    example = examples[0]
    seen = example.revision
    lead = make_member(Role.ML_LEAD)
    example_review(example=example, user=lead, action=ReviewAction.APPROVE)
    example_review(example=example, user=lead, action=ReviewAction.REOPEN)
    with pytest.raises(ConflictError, match="nothing was saved"):
        example_decide(
            example=example,
            user=reviewers[0],
            action=ReviewAction.APPROVE,
            expected_revision=seen,
        )
    assert ReviewVote.objects.count() == 0


def test_agreement_over_complete_votes_uses_cohen_for_two_raters(overlap_two, examples, reviewers):
    first, second, _ = reviewers
    plan = [
        (Verdict.APPROVE, Verdict.APPROVE),
        (Verdict.APPROVE, Verdict.REJECT),
        (Verdict.REJECT, Verdict.REJECT),
        (Verdict.REJECT, Verdict.APPROVE),
    ]
    for example, (a, b) in zip(examples, plan, strict=False):
        example_vote(example=example, user=first, verdict=a)
        example_vote(example=example, user=second, verdict=b)
    example_vote(example=examples[4], user=first, verdict=Verdict.APPROVE)  # incomplete
    summary = agreement_summary(overlap_two)
    assert summary.items == 4
    assert summary.percent == 0.5
    assert summary.kappa_name == "Cohen's kappa"
    assert summary.kappa == pytest.approx(0.0)
    assert summary.disputed == 2


# --- bulk -------------------------------------------------------------------------------------


def test_bulk_approve_goes_through_the_review_service_for_each_example(
    dataset, examples, reviewers
):
    selection = filtered_examples(dataset, QueueFilter(q="billing"), user=reviewers[0])
    token = selection_preview(selection, refused_statuses=frozenset()).token
    done = examples_bulk_review(
        examples=selection, user=reviewers[0], action=ReviewAction.APPROVE, expected_token=token
    )
    assert done == 2
    approved = Example.objects.filter(status=ExampleStatus.APPROVED)
    assert approved.count() == 2 and {e.revision for e in approved} == {1}
    assert ReviewDecision.objects.filter(action=ReviewAction.APPROVE).count() == 2


def test_bulk_with_one_refused_transition_changes_nothing_and_names_it(
    dataset, examples, reviewers
):
    example_review(example=examples[0], user=reviewers[0], action=ReviewAction.REJECT)
    before = list(Example.objects.order_by("id").values_list("status", "revision"))
    everything = filtered_examples(dataset, QueueFilter(status="any"), user=reviewers[0])
    preview = selection_preview(everything, refused_statuses=refused_statuses(ReviewAction.REJECT))
    assert preview.refused == [(examples[0].pk, "rejected")]
    with pytest.raises(ConflictError) as refused:
        examples_bulk_review(examples=everything, user=reviewers[0], action=ReviewAction.REJECT)
    assert f"{examples[0].pk} (rejected)" in refused.value.message
    assert "Nothing was changed" in refused.value.message
    assert list(Example.objects.order_by("id").values_list("status", "revision")) == before
    assert ReviewDecision.objects.count() == 1


def test_bulk_on_a_selection_that_changed_since_the_confirmation_is_refused(
    dataset, examples, reviewers
):
    selection = filtered_examples(dataset, QueueFilter(), user=reviewers[0])
    token = selection_preview(selection, refused_statuses=frozenset()).token
    example_review(example=examples[0], user=reviewers[1], action=ReviewAction.REJECT)
    with pytest.raises(ConflictError, match="selection changed"):
        examples_bulk_review(
            examples=selection,
            user=reviewers[0],
            action=ReviewAction.APPROVE,
            expected_token=token,
        )
    with pytest.raises(ConflictError, match="selection changed"):
        examples_bulk_tag(dataset=dataset, examples=selection, tag_name="x", expected_token=token)
    assert Example.objects.filter(status=ExampleStatus.APPROVED).count() == 0
    assert not Tag.objects.exists()


def test_bulk_tag_creates_the_tag_once_and_tags_the_selection(dataset, examples, reviewers):
    selection = filtered_examples(dataset, QueueFilter(q="bug"), user=reviewers[0])
    assert examples_bulk_tag(dataset=dataset, examples=selection, tag_name=" triage ") == 2
    assert examples_bulk_tag(dataset=dataset, examples=selection, tag_name="triage") == 2
    tag = Tag.objects.get()
    assert tag.name == "triage" and tag.examples.count() == 2


# --- card, diff, comments ---------------------------------------------------------------------


def test_the_word_diff_marks_only_changed_words():
    segments = answer_diff("the quick brown fox", "the slow brown fox jumps")
    changed = [(s.kind, s.text) for s in segments if s.kind != "equal"]
    assert changed == [("delete", "quick"), ("insert", "slow"), ("insert", " jumps")]
    assert "".join(s.text for s in segments if s.kind != "delete") == "the slow brown fox jumps"


def test_the_card_shows_the_original_answer_history_and_comments(examples, reviewers):
    example = examples[0]
    original = answer_of(example)
    example_review(example=example, user=reviewers[0], action=ReviewAction.EDIT, new_answer="v1")
    example_review(example=example, user=reviewers[1], action=ReviewAction.EDIT, new_answer="v2")
    example_comment_add(example=example, user=reviewers[2], body="  why v2?  ")
    example.refresh_from_db()
    card = example_card(example, user=reviewers[0])
    assert card.original_answer == original and card.answer == "v2"
    assert [h.decision.reviewer for h in card.history] == reviewers[:2]
    assert [(s.kind, s.text) for s in card.history[1].diff] == [("delete", "v1"), ("insert", "v2")]
    assert [c.body for c in card.comments] == ["why v2?"]
    with pytest.raises(ApplicationError, match="write something"):
        example_comment_add(example=example, user=reviewers[2], body="   ")


def test_a_reopened_example_is_voted_on_afresh(overlap_two, examples, reviewers, make_member):
    lead = make_member(Role.ML_LEAD)
    example = examples[0]
    example_decide(example=example, user=reviewers[0], action=ReviewAction.APPROVE)
    example_decide(example=example, user=reviewers[1], action=ReviewAction.REJECT)
    example.refresh_from_db()
    example_decide(example=example, user=lead, action=ReviewAction.REOPEN, may_adjudicate=True)
    example.refresh_from_db()
    assert example.status == ExampleStatus.PENDING
    assert not ReviewVote.objects.filter(example=example).exists()
    outcome = example_decide(example=example, user=reviewers[0], action=ReviewAction.REJECT)
    assert outcome.resolved == ""  # one fresh vote of two
    outcome = example_decide(example=example, user=reviewers[1], action=ReviewAction.REJECT)
    assert outcome.resolved == "unanimous"
