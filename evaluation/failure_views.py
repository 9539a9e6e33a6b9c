"""The failure browser: one run's per-item answers filtered by outcome ("A wrong, B right"),
diffed against the expected answer, tagged, and sent back to the review queue to be fixed."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, parse_id
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags

from .models import EvalResult, EvalRun
from .scoring import METRICS
from .selectors import (
    FAILURES_PAGE_SIZE,
    OUTCOMES,
    FailureRow,
    ResultFilter,
    eval_result_in_run,
    eval_run_in_project,
    failure_rows,
    filtered_results,
    is_right,
    report_metrics,
)
from .services import FAILURE_TAG_MAX_LENGTH, eval_result_tag, eval_results_send_to_review

TAGS_PARTIAL = "evaluation/failures.html#result-tags"
# The URL parameters that make up a view of the browser; POSTs carry them so that the person
# lands back on the same filtered page, and nothing else from the query is echoed back.
FILTER_PARAMS = ("a", "b", "outcome", "metric", "threshold", "tag", "order")
# The browser's orders, in the words of its Order menu.
ORDER_LABELS = {
    "item": "item order",
    "least_confident": "least confident first",
    "most_confident": "most confident first",
}


@dataclass(frozen=True)
class BrowserRow:
    """A filtered row with the chosen metric's scores looked up (templates cannot index a dict
    by a variable key)."""

    row: FailureRow
    score: float | None
    other_score: float | None
    right: bool
    other_right: bool


def _browser_row(row: FailureRow, chosen: ResultFilter) -> BrowserRow:
    score = row.result.scores.get(chosen.metric)
    other_score = row.other.scores.get(chosen.metric) if row.other else None
    return BrowserRow(
        row=row,
        score=score,
        other_score=other_score,
        right=is_right(row.result, chosen.metric, chosen.threshold) is True,
        other_right=is_right(row.other, chosen.metric, chosen.threshold) is True,
    )


def _query(params: QueryDict, *, with_page: bool = False) -> str:
    names = (*FILTER_PARAMS, "page") if with_page else FILTER_PARAMS
    return urlencode([(name, params[name]) for name in names if params.get(name)])


def _back_to_browser(request: AppRequest, project_id: int, run_id: int) -> str:
    url = reverse("eval_failures", args=[project_id, run_id])
    query = _query(request.GET, with_page=True)
    return f"{url}?{query}" if query else url


def _filter(run: EvalRun, params: QueryDict) -> ResultFilter:
    try:
        return ResultFilter.from_query(run, params)
    except ValueError as error:
        # A hand-edited or stale URL: say which parameter is wrong instead of failing.
        raise ApplicationError(f"Cannot filter the results: {error}.") from error


@login_required
@require_GET
def eval_failures(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    run = eval_run_in_project(project, run_id)
    chosen = _filter(run, request.GET)
    metric = METRICS[chosen.metric]
    matching = filtered_results(run, chosen)
    page = Paginator(matching, FAILURES_PAGE_SIZE).get_page(request.GET.get("page"))
    # Only the shown page is diffed: a diff costs far more than a filter.
    rows = [_browser_row(row, chosen) for row in failure_rows(chosen, list(page.object_list))]
    candidates = list(run.candidates.all())
    by_pk = {c.pk: c for c in candidates}
    metric_keys = report_metrics(run)
    if chosen.metric not in metric_keys:  # a metric chosen by URL stays selectable
        metric_keys.append(chosen.metric)
    a_results = EvalResult.objects.filter(candidate_id=chosen.candidate)
    known_tags = sorted({tag for tags in a_results.values_list("tags", flat=True) for tag in tags})
    context = {
        "project": project,
        "role": role,
        "run": run,
        "dataset": run.dataset_version.dataset,
        "chosen": chosen,
        "candidate_a": by_pk[chosen.candidate],
        "candidate_b": by_pk.get(chosen.other) if chosen.other else None,
        "candidates": candidates,
        "outcomes": list(OUTCOMES.items()),
        "metrics": [(key, METRICS[key].label) for key in metric_keys],
        "metric_label": metric.label,
        "metric_points": metric.points,
        "known_tags": known_tags,
        "orders": list(ORDER_LABELS.items()),
        "confidences": a_results.exclude(confidence=None).exists(),
        "page": page,
        "rows": rows,
        "matching": len(matching),
        "total": a_results.count(),
        "filter_query": _query(request.GET),
        "page_query": _query(request.GET, with_page=True),
        "can": role_flags(role),
        "tag_max_length": FAILURE_TAG_MAX_LENGTH,
    }
    return render(request, "evaluation/failures.html", context)


@login_required
@require_POST
def eval_result_tag_page(
    request: AppRequest, project_id: int, run_id: int, result_id: int
) -> HttpResponse:
    """Add a tag (field ``tag``) or remove one (field ``remove``); HTMX gets the row's tags."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    run = eval_run_in_project(project, run_id)
    result = eval_result_in_run(run, result_id)
    removing = "remove" in request.POST
    tag = request.POST.get("remove" if removing else "tag", "")
    status, error = 200, ""
    try:
        result = eval_result_tag(result=result, tag=tag, add=not removing)
    except ApplicationError as refused:
        status, error = refused.status_code, refused.message
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(_back_to_browser(request, project_id, run.pk))
    context = {
        "project": project,
        "run": run,
        "result": result,
        "can": role_flags(role),
        "tag_error": error,
        "tag_value": tag if error else "",
        "page_query": _query(request.GET, with_page=True),
        "tag_max_length": FAILURE_TAG_MAX_LENGTH,
    }
    return render(request, TAGS_PARTIAL, context, status=status)


def _result_ids(request: AppRequest) -> list[int]:
    raw = request.POST.getlist("results")
    if any(parse_id(value) is None for value in raw):
        raise ApplicationError("results: result ids are whole numbers.")
    return sorted({int(value) for value in raw})


@login_required
@require_POST
def eval_send_to_review(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    run = eval_run_in_project(project, run_id)
    ids = _result_ids(request)
    back = _back_to_browser(request, project_id, run.pk)
    if not ids:
        messages.error(request, "Tick at least one answer to send to the review queue.")
        return redirect(back)
    created = eval_results_send_to_review(run=run, result_ids=ids, user=request.user)
    dataset = run.dataset_version.dataset
    noun = "example" if len(created) == 1 else "examples"
    text = f"{len(created)} {noun} sent to the review queue of {dataset.name}"
    skipped = len(ids) - len(created)
    # The service never sends an answer twice; say so rather than leave the count unexplained.
    if skipped:
        text += f" ({skipped} already sent, not sent again)"
    messages.success(request, f"{text}.")
    return redirect(back)
