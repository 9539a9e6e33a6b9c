"""Reads for the review workflow: the filtered queue, the card, agreement, the selection."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404

from datasets.selectors import datasets_of, examples_of
from ftportal.errors import ApplicationError
from ftportal.models import Membership, Project
from ftportal.roles import ALLOWED_ROLES, Action

from ..contracts import ContractCheck, contract_violation
from ..models import (
    AnalysisRun,
    AnalysisStatus,
    Dataset,
    Example,
    ExampleAssignment,
    ExampleComment,
    ExampleStatus,
    Finding,
    ReviewDecision,
    ReviewVote,
    Verdict,
)
from ..quality.findings import (
    CONTRACT_VIOLATION,
    ERROR,
    KIND_LABELS,
)
from .agreement import cohen_kappa, fleiss_kappa_from_ratings, percent_agreement

ANY = "any"
ME = "me"
UNASSIGNED = "unassigned"
STATUS_CHOICES = [*ExampleStatus.values, ANY]

# Counting a filter's examples by status reads every matching row: about 25 ms at 100,000 rows.
# Up to this many the counts come with the card; above it the page fetches them separately, so
# the next example never waits for them.
COUNT_INLINE_LIMIT = 20_000


@dataclass(frozen=True)
class QueueFilter:
    """What the reviewer narrowed the queue to; lives in the URL so skip/next keep it."""

    status: str = ExampleStatus.PENDING
    finding: str = ""
    q: str = ""
    meta: str = ""  # "key=value" on Example.metadata
    tag: str = ""
    assignee: str = ANY  # "any", "me", "unassigned" or a username
    # What this viewer gets with no assignee in the URL ("me" once they have assignments).
    assignee_default: str = field(default=ANY, compare=False)

    @classmethod
    def from_query(cls, params: Mapping[str, str], *, default_assignee: str = ANY) -> QueueFilter:
        status = params.get("status") or ExampleStatus.PENDING
        status = ANY if status == "all" else status  # links from elsewhere may say "all"
        if status not in STATUS_CHOICES:
            raise ApplicationError(
                f"status: '{status}' is not one of {', '.join(STATUS_CHOICES)}.",
                extra={"field": "status"},
            )
        meta = (params.get("meta") or "").strip()
        if meta and "=" not in meta:
            raise ApplicationError(
                f"meta: '{meta}' should read key=value.", extra={"field": "meta"}
            )
        return cls(
            status=status,
            finding=(params.get("finding") or "").strip(),
            q=(params.get("q") or "").strip(),
            meta=meta,
            tag=(params.get("tag") or "").strip(),
            assignee=(params.get("assignee") or "").strip() or default_assignee,
            assignee_default=default_assignee,
        )

    def as_params(self) -> dict[str, str]:
        """Every field, so a link built from it means the same queue for every viewer."""
        return {
            "status": self.status,
            "finding": self.finding,
            "q": self.q,
            "meta": self.meta,
            "tag": self.tag,
            "assignee": self.assignee,
        }

    @property
    def query(self) -> str:
        """The URL query for this filter, leaving out what the viewer gets by default."""
        defaults = {"status": ExampleStatus.PENDING, "assignee": self.assignee_default}
        return urlencode({k: v for k, v in self.as_params().items() if v and v != defaults.get(k)})

    @property
    def narrowed(self) -> bool:
        """True when anything besides the status narrows the queue."""
        return replace(self, status=ExampleStatus.PENDING) != QueueFilter()


def latest_analysis_run(dataset: Dataset) -> AnalysisRun | None:
    return (
        AnalysisRun.objects.filter(dataset=dataset, status=AnalysisStatus.SUCCEEDED)
        .order_by("-id")
        .first()
    )


def finding_kinds(dataset: Dataset) -> list[str]:
    run = latest_analysis_run(dataset)
    kinds = (
        set(run.findings.values_list("kind", flat=True).distinct()) if run is not None else set()
    )
    # Contract findings are checked live, so they can be filtered on before any analysis.
    if dataset.answer_contract:
        kinds.add(CONTRACT_VIOLATION)
    return sorted(kinds)


def contract_breaking_ids(examples: QuerySet[Example], contract: dict[str, object]) -> list[int]:
    """The examples whose current answer breaks the contract, checked now: an edit since the
    last analysis counts at once. Reads only ids and messages, in batches."""
    check = ContractCheck(contract)
    found: list[int] = []
    for pk, messages in examples.values_list("id", "messages").iterator(chunk_size=2000):
        if check.violation(_answer(messages)) is not None:
            found.append(pk)
    return found


def user_has_assignments(dataset: Dataset, user: User) -> bool:
    return ExampleAssignment.objects.filter(example__dataset=dataset, reviewer=user).exists()


_REVIEW_ANNOTATIONS = ("my_assignments", "latest_run_id")


def _review_annotations(dataset_ref: str, user: User) -> dict[str, Exists | Subquery]:
    """What every queue request needs to know about the dataset (``dataset_ref`` points to
    it): whether this reviewer has assignments in it, and its latest finished analysis run's id
    (None when there is none)."""
    mine = ExampleAssignment.objects.filter(example__dataset=OuterRef(dataset_ref), reviewer=user)
    runs = AnalysisRun.objects.filter(
        dataset=OuterRef(dataset_ref), status=AnalysisStatus.SUCCEEDED
    )
    return {
        "my_assignments": Exists(mine),
        "latest_run_id": Subquery(runs.order_by("-id").values("id")[:1]),
    }


def dataset_for_review(project: Project, dataset_id: int, user: User) -> Dataset:
    """The project's dataset with what every queue request needs, in one query; 404 for any
    other id."""
    return get_object_or_404(
        datasets_of(project).annotate(**_review_annotations("pk", user)), pk=dataset_id
    )


def example_for_review(project: Project, example_id: int, user: User) -> Example:
    """The project's example and its dataset as ``dataset_for_review`` gives it, in one query;
    404 for any other id."""
    annotations = _review_annotations("dataset_id", user).items()
    example = get_object_or_404(
        examples_of(project).annotate(**{f"_ds_{k}": v for k, v in annotations}), pk=example_id
    )
    for name in _REVIEW_ANNOTATIONS:
        setattr(example.dataset, name, getattr(example, f"_ds_{name}"))
    return example


def default_assignee(dataset: Dataset, user: User) -> str:
    """A reviewer with assignments in this dataset sees their own queue unless they ask."""
    known = getattr(dataset, "my_assignments", None)
    mine = known if known is not None else user_has_assignments(dataset, user)
    return ME if mine else ANY


def _assignee_filter(examples: QuerySet[Example], assignee: str, user: User) -> QuerySet[Example]:
    if assignee == ANY:
        return examples
    if assignee == UNASSIGNED:
        return examples.filter(~Exists(ExampleAssignment.objects.filter(example=OuterRef("pk"))))
    reviewer_id = (
        user.pk
        if assignee == ME
        else User.objects.filter(username=assignee).values_list("pk", flat=True).first()
    )
    if reviewer_id is None:
        return examples.none()
    assigned = ExampleAssignment.objects.filter(example=OuterRef("pk"), reviewer_id=reviewer_id)
    return examples.filter(Exists(assigned))


def filtered_examples(
    dataset: Dataset, filters: QueueFilter, *, user: User, with_status: bool = True
) -> QuerySet[Example]:
    """The examples matching the filter; ``with_status=False`` leaves the status open."""
    examples = Example.objects.filter(dataset=dataset)
    if with_status and filters.status != ANY:
        examples = examples.filter(status=filters.status)
    if filters.finding and filters.finding != CONTRACT_VIOLATION:
        run = latest_analysis_run(dataset)
        if run is None:
            return examples.none()
        found = Finding.objects.filter(example=OuterRef("pk"), run=run, kind=filters.finding)
        examples = examples.filter(Exists(found))
    if filters.q:
        # The JSON cast to text is what both Postgres (jsonb) and SQLite can search; a
        # case-insensitive substring match is what a reviewer typing a word expects.
        examples = examples.annotate(_messages_text=Cast("messages", TextField())).filter(
            _messages_text__icontains=filters.q
        )
    if filters.meta:
        key, _, value = filters.meta.partition("=")
        # KeyTextTransform takes the key as a parameter, so a key with "__" in it is one key;
        # the cast makes "=" a text comparison on SQLite too (and matches numbers as written).
        value_text = Cast(KeyTextTransform(key.strip(), "metadata"), TextField())
        examples = examples.annotate(_meta_value=value_text).filter(_meta_value=value.strip())
    if filters.tag:
        examples = examples.filter(
            Exists(
                Example.tags.through.objects.filter(example=OuterRef("pk"), tag__name=filters.tag)
            )
        )
    examples = _assignee_filter(examples, filters.assignee, user)
    if filters.finding == CONTRACT_VIOLATION:
        # Last, so the answers are read only for the examples every other filter kept.
        examples = examples.filter(pk__in=contract_breaking_ids(examples, dataset.answer_contract))
    return examples


def queue_examples(dataset: Dataset, filters: QueueFilter, *, user: User) -> QuerySet[Example]:
    """The queue a reviewer works through: under overlap, what they already voted on leaves it."""
    examples = filtered_examples(dataset, filters, user=user)
    if dataset.review_overlap > 1 and filters.status == ExampleStatus.PENDING:
        voted = ReviewVote.objects.filter(example=OuterRef("pk"), reviewer=user)
        examples = examples.filter(~Exists(voted))
    return examples.order_by("id")


def with_card_flags(examples: QuerySet[Example]) -> QuerySet[Example]:
    """Mark whether each example has decisions, comments, tags or assignments, in the same
    query: a fresh example in a large queue has none, and its card then needs no more queries."""
    related = {
        "has_decisions": ReviewDecision.objects,
        "has_comments": ExampleComment.objects,
        "has_tags": Example.tags.through.objects,
        "has_assignments": ExampleAssignment.objects,
    }
    return examples.select_related("import_batch").annotate(
        **{flag: Exists(rows.filter(example=OuterRef("pk"))) for flag, rows in related.items()}
    )


def next_in_queue(examples: QuerySet[Example], *, after_id: int = 0) -> Example | None:
    """The next example after ``after_id`` in id order, wrapping around once."""
    examples = with_card_flags(examples)
    return examples.filter(id__gt=after_id).first() or examples.first()


# How long the answer to "too large to count inline?" is reused. The check reads up to
# COUNT_INLINE_LIMIT index entries (about 12 ms at the limit on this machine), too slow to repeat
# for every card, and a stale answer only moves the counts line between the card and a request
# of its own.
INLINE_COUNT_CHECK_CACHE_S = 300


def too_large_to_count_inline(dataset_id: int) -> bool:
    key = f"datasets:over-inline-count:{COUNT_INLINE_LIMIT}:{dataset_id}"
    known = cache.get(key)
    if known is None:
        examples = Example.objects.filter(dataset_id=dataset_id).order_by().values_list("id")
        known = bool(list(examples[COUNT_INLINE_LIMIT : COUNT_INLINE_LIMIT + 1]))
        cache.set(key, known, INLINE_COUNT_CHECK_CACHE_S)
    return bool(known)


def queue_counts(
    dataset: Dataset, filters: QueueFilter, *, user: User, limit: int | None = None
) -> dict[str, int] | None:
    """Examples per status among those matching every filter but the status.

    With ``limit``: None when more than ``limit`` examples match (checked with a bounded count).
    """
    examples = filtered_examples(dataset, filters, user=user, with_status=False).order_by()
    if limit is not None:
        if limit == COUNT_INLINE_LIMIT and not filters.narrowed:
            # The whole dataset is the set to count.
            too_many = too_large_to_count_inline(dataset.pk)
        else:
            too_many = examples.values("id")[: limit + 1].count() > limit
        if too_many:
            return None
    counts = {status.value: 0 for status in ExampleStatus}
    rows = examples.values("status").annotate(n=Count("id"))
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


# --- the card ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffSegment:
    kind: str  # "equal", "insert" or "delete"
    text: str


_TOKENS = re.compile(r"\s+|[^\s]+")


def answer_diff(before: str, after: str) -> list[DiffSegment]:
    """Word-level diff; the template wraps inserts and deletes in <ins>/<del>, text escaped."""
    old, new = _TOKENS.findall(before), _TOKENS.findall(after)
    segments: list[DiffSegment] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            segments.append(DiffSegment("equal", "".join(old[a1:a2])))
            continue
        if a2 > a1:
            segments.append(DiffSegment("delete", "".join(old[a1:a2])))
        if b2 > b1:
            segments.append(DiffSegment("insert", "".join(new[b1:b2])))
    return segments


@dataclass(frozen=True)
class HistoryEntry:
    decision: ReviewDecision
    diff: list[DiffSegment]
    changed_answer: bool


@dataclass(frozen=True)
class CardFinding:
    """One finding as the card shows it, in words, before the reviewer decides."""

    kind: str
    label: str
    severity: str
    message: str


def contract_finding(dataset: Dataset, answer: str) -> CardFinding | None:
    """The answer checked against the dataset's contract now (not at the last analysis), so
    an edit that fixes the answer clears it at once."""
    message = contract_violation(dataset.answer_contract, answer)
    if message is None:
        return None
    return CardFinding(CONTRACT_VIOLATION, KIND_LABELS[CONTRACT_VIOLATION], ERROR, message)


def approval_contract_break(example: Example, action: str, new_answer: str | None) -> str | None:
    """Why the answer this approval would keep (the edited one for an edit) breaks the
    dataset's answer contract; None when it keeps it or the action approves nothing."""
    if action == "edit":
        answer = (new_answer or "").strip()
    elif action == "approve":
        answer = _answer(example.messages)
    else:
        return None
    return contract_violation(example.dataset.answer_contract, answer)


def card_findings(dataset: Dataset, answer: str, stored: list[Finding]) -> list[CardFinding]:
    """The live contract check first, then the latest analysis's findings (personal data,
    duplicates, conflicts, ...); its contract findings are left out, as they may be stale."""
    live = contract_finding(dataset, answer)
    return ([live] if live else []) + [
        CardFinding(f.kind, KIND_LABELS.get(f.kind, f.kind), f.severity, f.message)
        for f in stored
        if f.kind != CONTRACT_VIOLATION
    ]


@dataclass(frozen=True)
class ExampleCard:
    example: Example
    answer: str
    original_answer: str
    diff_to_original: list[DiffSegment]
    history: list[HistoryEntry]
    comments: list[ExampleComment]
    votes: list[ReviewVote]
    findings: list[CardFinding]
    tags: list[str]
    my_vote: ReviewVote | None = None
    assignees: list[str] = field(default_factory=list)


def _answer(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"] if messages else ""


def example_card(example: Example, *, user: User) -> ExampleCard:
    """Everything the card shows about one example.

    Set ``example.dataset`` first, ideally from ``dataset_for_review`` (which knows the latest
    analysis run, saving a query per card).
    """

    def has(flag: str) -> bool:
        # Without the flags (an example not loaded through with_card_flags), ask the database.
        return bool(getattr(example, flag, True))

    decisions = (
        list(example.decisions.select_related("reviewer").order_by("id"))
        if has("has_decisions")
        else []
    )
    answer = _answer(example.messages)
    # The first decision saw the answer as imported; with none yet, the answer is the original.
    original = decisions[0].previous_answer if decisions else answer
    dataset = example.dataset
    if hasattr(dataset, "latest_run_id"):
        run_id = dataset.latest_run_id
    else:
        run = latest_analysis_run(dataset)
        run_id = run.pk if run else None
    findings = Finding.objects.filter(example=example, run_id=run_id) if run_id else []
    # Votes matter under overlap and to the adjudicator; elsewhere the query is saved.
    with_votes = dataset.review_overlap > 1 or example.status == ExampleStatus.DISPUTED
    votes = list(example.votes.select_related("reviewer").order_by("id")) if with_votes else []
    return ExampleCard(
        example=example,
        answer=answer,
        original_answer=original,
        diff_to_original=answer_diff(original, answer) if original != answer else [],
        history=[
            HistoryEntry(
                decision=d,
                diff=answer_diff(d.previous_answer, d.new_answer),
                changed_answer=d.previous_answer != d.new_answer,
            )
            for d in decisions
        ],
        comments=list(example.comments.select_related("author").order_by("id"))
        if has("has_comments")
        else [],
        votes=votes,
        findings=card_findings(dataset, answer, list(findings)),
        tags=list(example.tags.values_list("name", flat=True)) if has("has_tags") else [],
        my_vote=next((v for v in votes if v.reviewer_id == user.pk), None),
        assignees=list(
            example.assignments.order_by("id").values_list("reviewer__username", flat=True)
        )
        if has("has_assignments")
        else [],
    )


# --- selections for bulk actions --------------------------------------------------------------


def selection_token(rows: list[tuple[int, int]]) -> str:
    """A fingerprint of (id, revision) pairs: it changes when any example in the selection is
    added, removed or decided, so a confirmation cannot act on something else than it showed."""
    digest = hashlib.sha256()
    for pk, revision in sorted(rows):
        digest.update(f"{pk}:{revision};".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Selection:
    count: int
    token: str
    refused: list[tuple[int, str]]  # (example id, its status) that cannot take the action


def selection_preview(
    examples: QuerySet[Example], *, refused_statuses: frozenset[str]
) -> Selection:
    rows = list(examples.order_by().values_list("id", "revision", "status"))
    return Selection(
        count=len(rows),
        token=selection_token([(pk, revision) for pk, revision, _ in rows]),
        refused=sorted((pk, status) for pk, _, status in rows if status in refused_statuses),
    )


def reviewers_for(project: Project) -> QuerySet[User]:
    """Project members whose role lets them review: who can be assigned examples."""
    roles = [role.value for role in ALLOWED_ROLES[Action.REVIEW]]
    members = Membership.objects.filter(project=project, role__in=roles).values("user_id")
    return User.objects.filter(pk__in=members).order_by("username")


# --- agreement --------------------------------------------------------------------------------


def _shown_answers(example_ids: list[int], first_vote_at: dict[int, datetime]) -> dict[int, str]:
    """The answer each example showed while it was voted on.

    Votes are taken on pending examples, whose answer only changes through a decision, so it is
    the answer before the first decision made after the votes began, or else today's answer.
    """
    shown: dict[int, str] = {}
    decisions = ReviewDecision.objects.filter(example_id__in=example_ids).order_by("id")
    for example_id, previous, created_at in decisions.values_list(
        "example_id", "previous_answer", "created_at"
    ):
        if example_id not in shown and created_at >= first_vote_at[example_id]:
            shown[example_id] = previous
    missing = [pk for pk in example_ids if pk not in shown]
    for pk, messages in Example.objects.filter(pk__in=missing).values_list("pk", "messages"):
        shown[pk] = _answer(messages)
    return shown


def vote_label(verdict: str, answer: str, shown: str) -> str:
    """approve (as shown), edit (approve with another answer) or reject.

    Categories are shared by all items, as kappa needs. Two different edits both count as
    "edit" here, although the example still goes to an adjudicator, who compares the answers.
    """
    if verdict == Verdict.REJECT:
        return "reject"
    return "approve" if answer == shown else "edit"


@dataclass(frozen=True)
class AgreementSummary:
    raters_per_item: int
    items: int  # items with complete votes
    percent: float | None
    kappa: float | None
    kappa_name: str  # "Cohen's kappa" or "Fleiss' kappa"
    disputed: int  # examples waiting for an adjudicator


def agreement_summary(dataset: Dataset) -> AgreementSummary:
    raters = max(dataset.review_overlap, 2)
    by_example: dict[int, list[tuple[str, str]]] = {}
    first_vote_at: dict[int, datetime] = {}
    votes = ReviewVote.objects.filter(example__dataset=dataset).order_by("example_id", "id")
    for example_id, verdict, answer, created_at in votes.values_list(
        "example_id", "verdict", "answer", "created_at"
    ):
        cast = by_example.setdefault(example_id, [])
        first_vote_at.setdefault(example_id, created_at)
        if len(cast) < raters:  # the first n votes, so every item has the same count
            cast.append((verdict, answer))
    complete = [pk for pk, cast in by_example.items() if len(cast) == raters]
    shown = _shown_answers(complete, first_vote_at)
    items = [[vote_label(v, a, shown[pk]) for v, a in by_example[pk]] for pk in complete]
    if raters == 2:
        kappa = cohen_kappa([i[0] for i in items], [i[1] for i in items])
        name = "Cohen's kappa"
    else:
        kappa = fleiss_kappa_from_ratings(items)
        name = "Fleiss' kappa"
    disputed = dataset.examples.filter(status=ExampleStatus.DISPUTED).count()
    return AgreementSummary(
        raters_per_item=raters,
        items=len(items),
        percent=percent_agreement(items),
        kappa=kappa,
        kappa_name=name,
        disputed=disputed,
    )


def assignment_counts(dataset: Dataset) -> list[tuple[str, int, int]]:
    """Per assigned reviewer: (username, assigned, still pending)."""
    rows = (
        ExampleAssignment.objects.filter(example__dataset=dataset)
        .values("reviewer__username")
        .annotate(
            assigned=Count("id"),
            pending=Count("id", filter=Q(example__status=ExampleStatus.PENDING)),
        )
        .order_by("reviewer__username")
    )
    return [(r["reviewer__username"], r["assigned"], r["pending"]) for r in rows]
