"""Pages of the review workflow: the filtered queue, decisions, comments, bulk actions, setup."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets.selectors import dataset_in_project, example_in_project
from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, parse_id, query_id
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows, role_flags

from ..contracts import describe_contract
from ..held_out import example_origin
from ..models import Dataset, Example, ExampleStatus, ReviewAction
from ..services import assistant_answer
from .markdown import render_markdown
from .selectors import (
    ANY,
    COUNT_INLINE_LIMIT,
    ME,
    STATUS_CHOICES,
    UNASSIGNED,
    QueueFilter,
    agreement_summary,
    answer_diff,
    assignment_counts,
    contract_breaking_ids,
    contract_finding,
    dataset_for_review,
    default_assignee,
    example_card,
    example_for_review,
    filtered_examples,
    finding_kinds,
    next_in_queue,
    queue_counts,
    queue_examples,
    reviewers_for,
    selection_preview,
    with_card_flags,
)
from .services import (
    BULK_ACTIONS,
    BulkAction,
    ContractConfirmationNeeded,
    bulk_action_parse,
    bulk_reviewers,
    example_comment_add,
    example_decide,
    examples_bulk_apply,
    review_settings_update,
)

CARD = "datasets/review.html#review-card"


def _filters(request: AppRequest, dataset: Dataset) -> QueueFilter:
    return QueueFilter.from_query(
        request.GET, default_assignee=default_assignee(dataset, request.user)
    )


def _matching(dataset: Dataset, filters: QueueFilter, user: User) -> int | None:
    """How many examples the queue holds, worth saying only when a filter narrows it."""
    return queue_examples(dataset, filters, user=user).count() if filters.narrowed else None


def _queue_url(project_id: int, dataset_id: int, filters: QueueFilter, **extra: object) -> str:
    url = reverse("review_queue", args=[project_id, dataset_id])
    query = "&".join(part for part in [filters.query, urlencode(extra)] if part)
    return f"{url}?{query}" if query else url


def _check_queue_role(
    request: AppRequest, project: Project, filters: QueueFilter, *, action: Action
) -> None:
    # The disputed queue's cards carry every reviewer's vote: reading it needs READ_VOTES
    # (reviewers vote blind), acting on it ADJUDICATE.
    if filters.status == ExampleStatus.DISPUTED:
        project_for(user=request.user, project_id=project.pk, action=action)


def _card_context(
    request: AppRequest,
    *,
    project: Project,
    role: str,
    dataset: Dataset,
    filters: QueueFilter,
    example: Example | None,
) -> dict[str, object]:
    user = request.user
    if example is not None:
        example.dataset = dataset  # the annotated one: the card needs its latest analysis run
    counts = queue_counts(dataset, filters, user=user, limit=COUNT_INLINE_LIMIT)
    return {
        "project": project,
        "role": role,
        "dataset": dataset,
        "filters": filters,
        "filter_query": filters.query,
        "example": example,
        "card": example_card(example, user=user) if example else None,
        "answer": assistant_answer(example.messages) if example else "",
        "counts": counts,
        "matching": _matching(dataset, filters, user) if counts is not None else None,
        "voting": dataset.review_overlap > 1,
        "origin": example_origin(example) if example else None,
        # Managers read the queue; the server refuses their writes whatever the page shows.
        "can": role_flags(role),
    }


@login_required
def review_queue(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """The queue, one example at a time; read-only for those who may view but not review."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    dataset = dataset_for_review(project, dataset_id, request.user)
    filters = _filters(request, dataset)
    _check_queue_role(request, project, filters, action=Action.READ_VOTES)
    requested = query_id(request, "example")
    if requested is not None:
        example: Example | None = get_object_or_404(
            with_card_flags(Example.objects.all()), pk=requested, dataset=dataset
        )
    else:
        example = next_in_queue(
            queue_examples(dataset, filters, user=request.user),
            after_id=query_id(request, "after") or 0,
        )
    context = _card_context(
        request, project=project, role=role, dataset=dataset, filters=filters, example=example
    )
    if request.htmx:
        return render(request, CARD, context)
    can = role_flags(role)
    context.update(
        {
            "guidelines_html": render_markdown(dataset.guidelines) if dataset.guidelines else "",
            "contract_description": describe_contract(dataset.answer_contract),
            "status_choices": STATUS_CHOICES,
            "finding_kinds": finding_kinds(dataset),
            "tag_names": list(dataset.tags.values_list("name", flat=True)),
            "assignee_choices": [ANY, ME, UNASSIGNED],
            "reviewers": reviewers_for(project),
            "bulk_actions": BULK_ACTIONS,
            # Bulk actions are the lead's (roles.BULK_REVIEW); under overlap a bulk decision
            # overrides the votes: an adjudicator's call.
            "can_bulk_decide": can.bulk_review and (dataset.review_overlap == 1 or can.adjudicate),
        }
    )
    return render(request, "datasets/review.html", context)


@login_required
def review_counts(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """The counts line on its own, for a queue too large to count while loading the card."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    dataset = dataset_for_review(project, dataset_id, request.user)
    filters = _filters(request, dataset)
    _check_queue_role(request, project, filters, action=Action.READ_VOTES)
    context = {
        "filters": filters,
        "counts": queue_counts(dataset, filters, user=request.user),
        "matching": _matching(dataset, filters, request.user),
    }
    return render(request, "datasets/review.html#review-counts", context)


def _decision_from_post(request: AppRequest) -> ReviewAction:
    try:
        return ReviewAction(request.POST.get("action", ""))
    except ValueError:
        raise ApplicationError("Unknown review action; use approve, reject, edit or reopen.")


def _revision_from_post(request: AppRequest) -> int:
    """The example revision the card showed: a decision without it could overwrite a change
    made since, unseen, so it is required (the card's form always sends it)."""
    revision = parse_id(request.POST.get("revision", ""))
    if revision is None:
        raise ApplicationError(
            "revision: the example revision this decision was made on is required; reload the "
            "example and decide again.",
            extra={"field": "revision"},
        )
    return revision


@login_required
@require_POST
def review_decide(request: AppRequest, project_id: int, example_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    example = example_for_review(project, example_id, request.user)
    dataset = example.dataset
    filters = _filters(request, dataset)
    action = _decision_from_post(request)
    if example.status == ExampleStatus.DISPUTED:
        project_for(user=request.user, project_id=project_id, action=Action.ADJUDICATE)
    try:
        outcome = example_decide(
            example=example,
            user=request.user,
            action=action,
            new_answer=request.POST.get("answer"),
            comment=request.POST.get("comment", ""),
            expected_revision=_revision_from_post(request),
            may_adjudicate=role_allows(role, Action.ADJUDICATE),
            contract_confirmed=request.POST.get("contract_confirmed") == "1",
        )
    except ContractConfirmationNeeded as needed:
        # Not an error: the card asks, carrying the decision (and any edit) to the second yes.
        context = _card_context(
            request, project=project, role=role, dataset=dataset, filters=filters, example=example
        )
        context["contract_confirm"] = {
            "message": needed.extra["contract_violation"],
            "action": action.value,
            "answer": request.POST.get("answer", ""),
            "comment": request.POST.get("comment", ""),
        }
        return render(request, CARD, context)
    except ApplicationError as error:
        example.refresh_from_db()
        context = _card_context(
            request, project=project, role=role, dataset=dataset, filters=filters, example=example
        )
        context["review_error"] = error.message
        return render(request, CARD, context, status=error.status_code)
    if not request.htmx:
        return redirect(_queue_url(project_id, dataset.pk, filters))
    next_example = next_in_queue(
        queue_examples(dataset, filters, user=request.user), after_id=example.pk
    )
    context = _card_context(
        request, project=project, role=role, dataset=dataset, filters=filters, example=next_example
    )
    context["last_decision"] = outcome.summary
    return render(request, CARD, context)


@login_required
@require_POST
def review_comment(request: AppRequest, project_id: int, example_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    example = example_in_project(project, example_id)
    filters = _filters(request, example.dataset)
    status = 200
    error = ""
    try:
        example_comment_add(example=example, user=request.user, body=request.POST.get("body", ""))
    except ApplicationError as refused:
        status, error = refused.status_code, refused.message
    if not request.htmx:
        return redirect(_queue_url(project_id, example.dataset_id, filters, example=example.pk))
    context = _card_context(
        request,
        project=project,
        role=role,
        dataset=example.dataset,
        filters=filters,
        example=example,
    )
    context["comment_error"] = error
    return render(request, CARD, context, status=status)


@login_required
@require_POST
def review_diff(request: AppRequest, project_id: int, example_id: int) -> HttpResponse:
    """The diff of the answer being typed against the original, for the edit form."""
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    example = example_in_project(project, example_id)
    card = example_card(example, user=request.user)
    edited = request.POST.get("answer", "")
    context = {
        "diff": answer_diff(card.original_answer, edited),
        "unchanged": edited == card.original_answer,
        # Checked as the reviewer types, so they see the answer keep the contract before saving.
        "contract_checked": bool(example.dataset.answer_contract),
        "edit_problem": contract_finding(example.dataset, edited.strip()),
    }
    return render(request, "datasets/review.html#edit-preview", context)


# --- bulk actions -----------------------------------------------------------------------------


def _bulk_done_message(action: BulkAction, done: int, *, tag: str, reviewers: list[User]) -> str:
    if action is BulkAction.TAG:
        return f"Tagged {done} example(s) '{tag}'."
    if action is BulkAction.ASSIGN:
        return f"Made {done} assignment(s) to {', '.join(r.username for r in reviewers)}."
    return f"{action.capitalize()}d {done} example(s)."


@login_required
def review_bulk(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """GET: the confirmation (how many examples, which cannot); POST: do it, all or nothing."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    dataset = dataset_in_project(project, dataset_id)
    params = request.POST if request.method == "POST" else request.GET
    action = bulk_action_parse(params.get("bulk_action", ""))
    project_for(user=request.user, project_id=project_id, action=action.permission(dataset))
    filters = _filters(request, dataset)
    _check_queue_role(request, project, filters, action=Action.ADJUDICATE)
    # The selection is what the filter shows, decided or not (a bulk action can re-decide).
    examples = filtered_examples(dataset, filters, user=request.user)
    names = [n for n in request.POST.getlist("reviewers") or request.GET.getlist("reviewers") if n]
    reviewers = bulk_reviewers(project, names) if action is BulkAction.ASSIGN else []
    tag = params.get("tag_name", "").strip()
    queue_url = _queue_url(project_id, dataset_id, filters)
    if request.method == "POST":
        done = examples_bulk_apply(
            action=action,
            dataset=dataset,
            examples=examples,
            user=request.user,
            tag_name=tag,
            reviewers=reviewers,
            expected_token=request.POST.get("selection_token") or None,
        )
        messages.success(request, _bulk_done_message(action, done, tag=tag, reviewers=reviewers))
        return redirect(queue_url)
    context = {
        "project": project,
        "role": role,
        "dataset": dataset,
        "filters": filters,
        "filter_query": filters.query,
        "bulk_action": action.value,
        "tag": tag,
        "reviewers": reviewers,
        "selection": selection_preview(examples, refused_statuses=action.refused_statuses()),
        "queue_url": queue_url,
        # A bulk approval is confirmed once, so the confirmation says which answers it would
        # approve that break the answer contract.
        "contract_breaking": contract_breaking_ids(examples, dataset.answer_contract)
        if action is BulkAction.APPROVE and dataset.answer_contract
        else [],
    }
    return render(request, "datasets/review_bulk.html", context)


# --- setup and agreement ----------------------------------------------------------------------


@login_required
def review_setup(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """Overlap, guidelines and the agreement panel; everyone sees it, ASSIGN roles change it."""
    action = Action.ASSIGN if request.method == "POST" else Action.VIEW
    project, role = project_for(user=request.user, project_id=project_id, action=action)
    dataset = dataset_in_project(project, dataset_id)
    status = 200
    error = ""
    if request.method == "POST":
        overlap = request.POST.get("review_overlap", "")
        try:
            if parse_id(overlap) is None:
                raise ApplicationError(
                    "review_overlap: a whole number of reviewers per example.",
                    extra={"field": "review_overlap"},
                )
            review_settings_update(
                dataset=dataset,
                review_overlap=int(overlap),
                guidelines=request.POST.get("guidelines", ""),
            )
        except ApplicationError as refused:
            status, error = refused.status_code, refused.message
            dataset.refresh_from_db()
        else:
            messages.success(request, "Saved the review settings.")
            return redirect("review_setup", project_id, dataset_id)
    context = {
        "project": project,
        "role": role,
        "dataset": dataset,
        "agreement": agreement_summary(dataset),
        "assignments": assignment_counts(dataset),
        "guidelines_html": render_markdown(dataset.guidelines) if dataset.guidelines else "",
        "can": role_flags(role),
        "setup_error": error,
    }
    return render(request, "datasets/review_setup.html", context, status=status)
