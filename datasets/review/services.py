"""Writes for the review workflow: settings, assignment, votes, bulk actions, comments.

Every decision on an example still goes through ``services.example_review`` (the append-only
decision log, the revision bump and the transition check live there, once).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet

from ftportal.errors import ApplicationError, ConflictError, PermissionDeniedError
from ftportal.models import Project
from ftportal.roles import Action

from ..models import (
    EXAMPLE_TRANSITIONS,
    Dataset,
    Example,
    ExampleAssignment,
    ExampleComment,
    ExampleStatus,
    ReviewAction,
    ReviewVote,
    Tag,
    Verdict,
)
from ..services import _stale_review, assistant_answer, example_review, example_transition
from .selectors import approval_contract_break, reviewers_for, selection_token

MAX_OVERLAP = 10
MAX_COMMENT_CHARS = 5000
MAX_GUIDELINES_CHARS = 50_000
MAX_TAG_CHARS = 100
# Listed by id in a refusal; more would drown the message.
REFUSED_SHOWN = 20

TARGET_STATUS = {
    ReviewAction.APPROVE: ExampleStatus.APPROVED,
    ReviewAction.EDIT: ExampleStatus.APPROVED,
    ReviewAction.REJECT: ExampleStatus.REJECTED,
    ReviewAction.REOPEN: ExampleStatus.PENDING,
}


def review_settings_update(*, dataset: Dataset, review_overlap: int, guidelines: str) -> Dataset:
    if not 1 <= review_overlap <= MAX_OVERLAP:
        raise ApplicationError(
            f"review_overlap: must be between 1 and {MAX_OVERLAP}; got {review_overlap}.",
            extra={"field": "review_overlap"},
        )
    if len(guidelines) > MAX_GUIDELINES_CHARS:
        raise ApplicationError(
            f"guidelines: {len(guidelines)} characters, over the limit of {MAX_GUIDELINES_CHARS}.",
            extra={"field": "guidelines"},
        )
    dataset.review_overlap = review_overlap
    dataset.guidelines = guidelines
    dataset.save(update_fields=["review_overlap", "guidelines"])
    return dataset


# --- assignment -------------------------------------------------------------------------------


def examples_assign(
    *,
    dataset: Dataset,
    examples: QuerySet[Example],
    reviewers: Sequence[User],
    assigned_by: User,
) -> int:
    """Assign each example to ``dataset.review_overlap`` distinct reviewers, round-robin.

    Reviewers already assigned to an example count towards its overlap and are not assigned
    twice. Returns how many assignments were created.
    """
    overlap = dataset.review_overlap
    allowed = set(reviewers_for(dataset.project).values_list("pk", flat=True))
    outsiders = sorted(r.get_username() for r in reviewers if r.pk not in allowed)
    if outsiders:
        raise ApplicationError(
            f"reviewers: {', '.join(outsiders)} cannot review in this project.",
            extra={"field": "reviewers"},
        )
    unique = list({r.pk: r for r in reviewers}.values())
    if len(unique) < overlap:
        raise ApplicationError(
            f"reviewers: overlap is {overlap}, so choose at least {overlap} reviewers "
            f"(got {len(unique)}).",
            extra={"field": "reviewers"},
        )
    with transaction.atomic():
        example_ids = list(examples.order_by("id").values_list("id", flat=True))
        existing: dict[int, set[int]] = {}
        for example_id, reviewer_id in ExampleAssignment.objects.filter(
            example_id__in=example_ids
        ).values_list("example_id", "reviewer_id"):
            existing.setdefault(example_id, set()).add(reviewer_id)
        created: list[ExampleAssignment] = []
        cursor = 0  # one rotation across the whole selection keeps the load even
        for example_id in example_ids:
            have = existing.get(example_id, set())
            needed = overlap - len(have)
            for _ in range(len(unique)):
                if needed <= 0:
                    break
                reviewer = unique[cursor % len(unique)]
                cursor += 1
                if reviewer.pk in have:
                    continue
                created.append(
                    ExampleAssignment(
                        example_id=example_id, reviewer=reviewer, assigned_by=assigned_by
                    )
                )
                needed -= 1
        # ignore_conflicts: an assignment made by someone else meanwhile is the same fact.
        ExampleAssignment.objects.bulk_create(created, batch_size=2000, ignore_conflicts=True)
    return len(created)


# --- one reviewer's decision, with overlap --------------------------------------------------


@dataclass(frozen=True)
class DecideOutcome:
    example: Example
    action: ReviewAction
    vote: ReviewVote | None  # set when the decision was recorded as one vote among several
    resolved: str = ""  # "unanimous" or "disputed" when this vote completed the set

    @property
    def summary(self) -> str:
        if self.vote is None:
            return f"Example {self.example.pk}: {self.action.label.lower()}."
        verdict = self.vote.get_verdict_display().lower()
        suffix = {
            "unanimous": " All votes agree: the example is decided.",
            "disputed": " The votes disagree: it goes to an adjudicator.",
        }.get(self.resolved, "")
        return f"Example {self.example.pk}: your vote ({verdict}) is recorded.{suffix}"


def _resolve_votes(example: Example, votes: list[ReviewVote], user: User) -> str:
    """All n votes are in: agree → decide through example_review; otherwise → disputed."""
    names = ", ".join(v.reviewer.get_username() for v in votes)
    verdicts = {v.verdict for v in votes}
    answers = {v.answer for v in votes}
    if verdicts == {Verdict.REJECT}:
        example_review(
            example=example, user=user, action=ReviewAction.REJECT, comment=f"Unanimous: {names}"
        )
        return "unanimous"
    if verdicts == {Verdict.APPROVE} and len(answers) == 1:
        agreed = answers.pop()
        unchanged = agreed == assistant_answer(example.messages)
        example_review(
            example=example,
            user=user,
            action=ReviewAction.APPROVE if unchanged else ReviewAction.EDIT,
            new_answer=None if unchanged else agreed,
            comment=f"Unanimous: {names}",
        )
        return "unanimous"
    example_transition(example, ExampleStatus.DISPUTED)
    return "disputed"


def example_vote(
    *,
    example: Example,
    user: User,
    verdict: Verdict,
    answer: str | None = None,
    expected_revision: int | None = None,
) -> DecideOutcome:
    """Record one reviewer's independent verdict on a pending example under overlap.

    A vote does not bump the revision: reviewers vote independently, so one reviewer's vote
    must not make another's view stale. A decision or dispute in between does.
    """
    with transaction.atomic():
        # The row lock serialises the votes on one example, so exactly one vote completes it.
        locked = Example.objects.select_for_update().select_related("dataset").get(pk=example.pk)
        if expected_revision is not None and locked.revision != expected_revision:
            raise _stale_review(locked)
        if locked.status != ExampleStatus.PENDING:
            raise ConflictError(
                f"Example {locked.pk} is {locked.get_status_display().lower()}; "
                "only pending examples take votes.",
                extra={"field": "status", "current_status": locked.status},
            )
        if ReviewVote.objects.filter(example=locked, reviewer=user).exists():
            raise ConflictError(
                f"You already voted on example {locked.pk}; nothing was saved.",
                extra={"field": "vote"},
            )
        current = assistant_answer(locked.messages)
        text = (answer if answer is not None else current).strip()
        if verdict == Verdict.APPROVE and not text:
            raise ApplicationError("The edited answer is empty; write an answer or reject.")
        vote = ReviewVote.objects.create(
            example=locked,
            reviewer=user,
            verdict=verdict,
            answer=text if verdict == Verdict.APPROVE else current,
        )
        votes = list(locked.votes.select_related("reviewer").order_by("id"))
        resolved = ""
        if len(votes) >= locked.dataset.review_overlap:
            resolved = _resolve_votes(locked, votes[: locked.dataset.review_overlap], user)
    locked.refresh_from_db()
    action = ReviewAction.REJECT if verdict == Verdict.REJECT else ReviewAction.APPROVE
    return DecideOutcome(example=locked, action=action, vote=vote, resolved=resolved)


class ContractConfirmationNeeded(ConflictError):
    """An approval of an answer that breaks the answer contract, not yet confirmed."""


def _check_contract_confirmed(
    example: Example, action: ReviewAction, new_answer: str | None
) -> None:
    # What is approved is what the model is taught, so a broken answer needs a second yes.
    problem = approval_contract_break(example, action, new_answer)
    if problem is not None:
        raise ContractConfirmationNeeded(
            f"Example {example.pk}: the answer breaks the answer contract ({problem}); nothing "
            "was saved. Fix the answer, or confirm (contract_confirmed) to approve it anyway.",
            extra={"field": "contract_confirmed", "contract_violation": problem},
        )


def example_decide(
    *,
    example: Example,
    user: User,
    action: ReviewAction,
    new_answer: str | None = None,
    comment: str = "",
    expected_revision: int | None = None,
    may_adjudicate: bool = False,
    contract_confirmed: bool = False,
) -> DecideOutcome:
    """What a reviewer's approve/reject/edit means for this example right now.

    Pending under overlap → a vote; disputed → an adjudication (only for adjudicators);
    otherwise → a decision. The route is chosen from the example as the caller loaded it; a
    change since is caught under the row lock by the revision check. Approving an answer that
    breaks the dataset's answer contract needs ``contract_confirmed``.
    """
    fresh = example  # as the caller loaded it, with its dataset
    if not contract_confirmed:
        _check_contract_confirmed(fresh, action, new_answer)
    if expected_revision is None:
        # The route below was chosen from this revision; pinning it makes a change since (a
        # dispute, a decision) a conflict under the row lock instead of a wrongly routed save.
        expected_revision = fresh.revision
    if fresh.status == ExampleStatus.DISPUTED and not may_adjudicate:
        raise PermissionDeniedError(
            f"Example {fresh.pk} is disputed; only an adjudicator (ML lead or admin) decides it."
        )
    voting = (
        fresh.dataset.review_overlap > 1
        and fresh.status == ExampleStatus.PENDING
        and action in (ReviewAction.APPROVE, ReviewAction.REJECT, ReviewAction.EDIT)
    )
    if voting:
        if action == ReviewAction.EDIT and not (new_answer or "").strip():
            raise ApplicationError("The edited answer is empty; write an answer or reject.")
        return example_vote(
            example=fresh,
            user=user,
            verdict=Verdict.REJECT if action == ReviewAction.REJECT else Verdict.APPROVE,
            answer=new_answer if action == ReviewAction.EDIT else None,
            expected_revision=expected_revision,
        )
    with transaction.atomic():
        decided = example_review(
            example=fresh,
            user=user,
            action=action,
            new_answer=new_answer,
            comment=comment,
            expected_revision=expected_revision,
        )
        if action == ReviewAction.REOPEN:
            # Sent back to review, the example is judged afresh: earlier votes would otherwise
            # decide it again at once, and bar their reviewers from voting anew.
            ReviewVote.objects.filter(example=decided).delete()
    return DecideOutcome(example=decided, action=action, vote=None)


# --- bulk actions -----------------------------------------------------------------------------


class BulkAction(enum.StrEnum):
    """A bulk action on a filtered selection; it knows the project action it needs."""

    APPROVE = "approve"
    REJECT = "reject"
    TAG = "tag"
    ASSIGN = "assign"

    @property
    def review_action(self) -> ReviewAction | None:
        """The decision it records on each example, for approve and reject."""
        return ReviewAction(self.value) if self in (BulkAction.APPROVE, BulkAction.REJECT) else None

    def permission(self, dataset: Dataset) -> Action:
        """The project action it needs on this dataset (never plain REVIEW)."""
        if self is BulkAction.ASSIGN:
            return Action.ASSIGN
        if self.review_action is not None and dataset.review_overlap > 1:
            # Under overlap a bulk decision overrides the independent votes: an adjudicator's call.
            return Action.ADJUDICATE
        return Action.BULK_REVIEW

    def refused_statuses(self) -> frozenset[str]:
        """Statuses it cannot move an example from (none for tag and assign)."""
        decision = self.review_action
        return refused_statuses(decision) if decision is not None else frozenset()


BULK_ACTIONS = tuple(action.value for action in BulkAction)


def bulk_action_parse(value: str) -> BulkAction:
    try:
        return BulkAction(value)
    except ValueError:
        raise ApplicationError(
            f"bulk_action: choose one of {', '.join(BULK_ACTIONS)}.", extra={"field": "bulk_action"}
        ) from None


def bulk_reviewers(project: Project, names: Sequence[str]) -> list[User]:
    """The reviewers named for a bulk assign, in the order given.

    An empty list is refused here, for the page and the API alike: an assignment to nobody
    can never be made, so the caller hears it before confirming rather than after.
    """
    found = {u.username: u for u in reviewers_for(project).filter(username__in=names)}
    missing = [name for name in names if name not in found]
    if missing or not names:
        raise ApplicationError(
            f"reviewers: {', '.join(missing) or 'none given'}: name project members who review.",
            extra={"field": "reviewers"},
        )
    return [found[name] for name in names]


def examples_bulk_apply(
    *,
    action: BulkAction,
    dataset: Dataset,
    examples: QuerySet[Example],
    user: User,
    tag_name: str = "",
    reviewers: Sequence[User] = (),
    expected_token: str | None = None,
) -> int:
    """Do one bulk action on the selection, all or nothing; how many decisions, tags or
    assignments it made. The caller has checked ``action.permission(dataset)``."""
    decision = action.review_action
    if decision is not None:
        return examples_bulk_review(
            examples=examples, user=user, action=decision, expected_token=expected_token
        )
    if action is BulkAction.TAG:
        return examples_bulk_tag(
            dataset=dataset, examples=examples, tag_name=tag_name, expected_token=expected_token
        )
    return examples_bulk_assign(
        dataset=dataset,
        examples=examples,
        reviewers=reviewers,
        assigned_by=user,
        expected_token=expected_token,
    )


def _locked_selection(examples: QuerySet[Example], expected_token: str | None) -> list[Example]:
    ids = examples.order_by().values("id")
    # Locked in id order, the same order everywhere, so two bulk actions cannot deadlock.
    locked = list(Example.objects.filter(pk__in=ids).order_by("id").select_for_update())
    token = selection_token([(e.pk, e.revision) for e in locked])
    if expected_token is not None and token != expected_token:
        raise ConflictError(
            f"The selection changed since you confirmed it (now {len(locked)} example(s); "
            "someone decided, added or edited examples meanwhile); nothing was saved. "
            "Review the new count and confirm again.",
            extra={"field": "selection_token", "current_count": len(locked)},
        )
    return locked


def refused_statuses(action: ReviewAction) -> frozenset[str]:
    target = TARGET_STATUS[action]
    return frozenset(
        status for status, targets in EXAMPLE_TRANSITIONS.items() if target not in targets
    )


def examples_bulk_review(
    *,
    examples: QuerySet[Example],
    user: User,
    action: ReviewAction,
    expected_token: str | None = None,
    comment: str = "",
) -> int:
    """Approve or reject every example in the selection, all or nothing."""
    if action not in (ReviewAction.APPROVE, ReviewAction.REJECT):
        raise ApplicationError("Bulk review approves or rejects; edit examples one at a time.")
    target = TARGET_STATUS[action]
    with transaction.atomic():
        locked = _locked_selection(examples, expected_token)
        refused = [e for e in locked if target not in EXAMPLE_TRANSITIONS.get(e.status, ())]
        if refused:
            shown = ", ".join(f"{e.pk} ({e.status})" for e in refused[:REFUSED_SHOWN])
            more = (
                f" and {len(refused) - REFUSED_SHOWN} more" if len(refused) > REFUSED_SHOWN else ""
            )
            raise ConflictError(
                f"{len(refused)} of {len(locked)} example(s) cannot be {target}: {shown}{more}. "
                "Nothing was changed; narrow the filter and try again.",
                extra={"field": "action", "refused": [e.pk for e in refused]},
            )
        for example in locked:
            example_review(
                example=example,
                user=user,
                action=action,
                comment=comment or "Bulk action",
                expected_revision=example.revision,
            )
    return len(locked)


def examples_bulk_tag(
    *,
    dataset: Dataset,
    examples: QuerySet[Example],
    tag_name: str,
    expected_token: str | None = None,
) -> int:
    name = tag_name.strip()
    if not name or len(name) > MAX_TAG_CHARS:
        raise ApplicationError(
            f"tag: give a tag name of 1 to {MAX_TAG_CHARS} characters.", extra={"field": "tag"}
        )
    with transaction.atomic():
        locked = _locked_selection(examples, expected_token)
        tag, _ = Tag.objects.get_or_create(dataset=dataset, name=name)
        through = Example.tags.through
        through.objects.bulk_create(
            [through(example_id=e.pk, tag_id=tag.pk) for e in locked],
            batch_size=2000,
            ignore_conflicts=True,
        )
    return len(locked)


def examples_bulk_assign(
    *,
    dataset: Dataset,
    examples: QuerySet[Example],
    reviewers: Sequence[User],
    assigned_by: User,
    expected_token: str | None = None,
) -> int:
    with transaction.atomic():
        locked = _locked_selection(examples, expected_token)
        return examples_assign(
            dataset=dataset,
            examples=Example.objects.filter(pk__in=[e.pk for e in locked]),
            reviewers=reviewers,
            assigned_by=assigned_by,
        )


# --- comments ---------------------------------------------------------------------------------


def example_comment_add(*, example: Example, user: User, body: str) -> ExampleComment:
    text = body.strip()
    if not text:
        raise ApplicationError("comment: write something first.", extra={"field": "body"})
    if len(text) > MAX_COMMENT_CHARS:
        raise ApplicationError(
            f"comment: {len(text)} characters, over the limit of {MAX_COMMENT_CHARS}.",
            extra={"field": "body"},
        )
    return ExampleComment.objects.create(example=example, author=user, body=text)
