"""Pages of evaluations: the new-evaluation form and the evaluation list, starting an
evaluation of a dataset version or of every checkpoint of a training job, resuming and
cancelling a run, a run's report with its verdicts, the advice page built from it, and the
side-by-side rating of two candidates. The failures page is in failure_views.py."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from catalog.models import BaseModel
from catalog.selectors import enabled_endpoints
from datasets.models import DatasetVersion
from datasets.selectors import dataset_versions_of
from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, parse_id
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from ftportal.spending import ledger_spent
from registry.selectors import model_version_in_project, model_versions_of
from training.selectors import training_job_in_project

from .advice import (
    DEFAULT_HORIZON_MONTHS,
    DEFAULT_MONTHLY_REQUESTS,
    FINE_TUNED_KINDS,
    MAX_HORIZON_MONTHS,
    MAX_MONTHLY_REQUESTS,
    NoAdvice,
    run_advice,
)
from .contamination import run_contamination
from .dashboard import project_dashboards
from .forms import new_evaluation_from, whole_number
from .judge import DEFAULT_RUBRIC
from .models import Candidate, EvalRun, EvalSplit, EvalStatus
from .rating import choice_from_side, next_card
from .report import run_spent, run_verdicts
from .runner import progress
from .scoring import BOOTSTRAP_RESAMPLES, METRICS
from .selectors import (
    candidate_rows,
    checkpoint_sweep_chart,
    comparisons_for_page,
    confusions,
    eval_run_in_project,
    eval_runs_of,
    judge_agreement,
    report_metrics,
    side_by_side,
)
from .services import (
    checkpoint_sweep_create,
    eval_run_cancel,
    eval_run_create,
    eval_run_for_version,
    eval_run_resume,
    human_preference_record,
)
from .statistics import RULE

SIDE_BY_SIDE_ITEMS = 20


@login_required
@require_POST
def eval_create(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    version = model_version_in_project(project, version_id)
    run = eval_run_for_version(
        project=project,
        model_version=version,
        user=request.user,
        test_set=_chosen_test_set(project, request.POST.get("test_set", "")),
    )
    return redirect("eval_detail", project_id, run.pk)


def _chosen_test_set(project: Project, raw: str) -> DatasetVersion | None:
    """The job page's choice of where to evaluate: a held-out test set's id, or empty for the
    version's own validation split; anything else is a 400 naming the field."""
    if not raw.strip():
        return None
    test_set_id = parse_id(raw.strip())
    found = (
        dataset_versions_of(project).filter(pk=test_set_id, is_test_set=True).first()
        if test_set_id
        else None
    )
    if found is None:
        raise ApplicationError(
            f"test_set: no held-out test set {raw.strip()[:40]!r} in this project.",
            extra={"field": "test_set"},
        )
    return found


@login_required
@require_POST
def checkpoint_sweep(request: AppRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    job = training_job_in_project(project, job_id)
    run = checkpoint_sweep_create(job=job, user=request.user)
    return redirect("eval_detail", project_id, run.pk)


@login_required
@require_POST
def eval_resume(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    run = eval_run_in_project(project, run_id)
    eval_run_resume(run=run)
    return redirect("eval_detail", project_id, run.pk)


@login_required
@require_POST
def eval_cancel(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    run = eval_run_in_project(project, run_id)
    eval_run_cancel(run=run, user=request.user)
    return redirect("eval_detail", project_id, run.pk)


@login_required
def eval_detail(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    run = eval_run_in_project(project, run_id)
    metrics = report_metrics(run)
    candidates, rows = side_by_side(run, limit=SIDE_BY_SIDE_ITEMS)
    done, total = progress(run)
    primary = run.report.get("primary_metric") or run.primary_metric
    verdicts = run_verdicts(run, candidates)
    context = {
        "project": project,
        "role": role,
        "can": role_flags(role),
        "run": run,
        "candidates": candidates,
        "rows": rows,
        "done": done,
        "total": total,
        "metric_headers": [(key, METRICS[key].label) for key in metrics],
        "candidate_rows": candidate_rows(run, metrics),
        "comparisons": comparisons_for_page(run),
        "verdicts": verdicts.sentences,
        "recommendation": verdicts.recommendation,
        "rule": verdicts.rule,
        "sweep_chart": checkpoint_sweep_chart(run),
        "reference_id": run.report.get("reference"),
        "confusions": confusions(run),
        # What the ledger holds for the run (hosted tokens, this machine's time), all attempts.
        "spend_usd": ledger_spent(run_spent(run)),
        "has_fine_tuned": any(c.kind in FINE_TUNED_KINDS for c in candidates),
        "judge_rows": run.report.get("judge", []),
        "agreement_rows": judge_agreement(run) if run.report.get("judge") else [],
        "primary_label": METRICS[primary].label if primary in METRICS else primary,
        "resamples": BOOTSTRAP_RESAMPLES,
        "in_progress": run.status in (EvalStatus.QUEUED, EvalStatus.RUNNING),
    }
    if request.htmx:  # the progress poll re-renders the body only
        return render(request, "evaluation/eval_detail.html#eval-body", context)
    context["contamination"] = run_contamination(run)
    return render(request, "evaluation/eval_detail.html", context)


@login_required
def eval_advice(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    """Fine-tune or prompt? The run's candidates side by side with what each costs at the
    expected volume, the break-even and payback, and the guide's pitfalls."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    run = eval_run_in_project(project, run_id)
    monthly = whole_number(
        request.GET, "monthly_requests", default=DEFAULT_MONTHLY_REQUESTS, most=MAX_MONTHLY_REQUESTS
    )
    horizon = whole_number(
        request.GET, "horizon_months", default=DEFAULT_HORIZON_MONTHS, most=MAX_HORIZON_MONTHS
    )
    context: dict[str, object] = {
        "project": project,
        "role": role,
        "run": run,
        "monthly_requests": monthly,
        "horizon_months": horizon,
    }
    try:
        context["result"] = run_advice(run, monthly_requests=monthly, horizon_months=horizon)
    except NoAdvice as reason:
        context["no_advice"] = str(reason)
    return render(request, "evaluation/advice.html", context)


@login_required
def eval_list(request: AppRequest, project_id: int) -> HttpResponse:
    """Every evaluation of the project, and per registered model its metric charts across
    versions and its evaluation history."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    runs = eval_runs_of(project)
    context = {
        "project": project,
        "role": role,
        "can": role_flags(role),
        "runs": runs,
        "dashboards": project_dashboards(project),
        "rule": RULE,
    }
    return render(request, "evaluation/eval_list.html", context)


def _new_form_context(project: Project, data: QueryDict | None) -> dict[str, object]:
    return {
        "project": project,
        "dataset_versions": dataset_versions_of(project).order_by("dataset__name", "-number"),
        # Few-shot examples come from a training version's train split, never a test set.
        "shots_versions": dataset_versions_of(project)
        .filter(is_test_set=False)
        .order_by("dataset__name", "-number"),
        "model_versions": model_versions_of(project).order_by("registered_model__name", "-number"),
        "base_models": BaseModel.objects.filter(is_active=True).order_by("display_name"),
        "metrics": [(key, spec.label) for key, spec in METRICS.items()],
        "splits": EvalSplit.choices,
        # Users pick a registered endpoint by name; its URL and secret are the admin's.
        "endpoints": enabled_endpoints(),
        "default_rubric": DEFAULT_RUBRIC,
        "data": data or QueryDict(),
        "chosen_versions": data.getlist("model_versions") if data else [],
    }


@login_required
def eval_new(request: AppRequest, project_id: int) -> HttpResponse:
    """Choose the test set, the candidates, the metrics and an optional judge; a bad field
    comes back as a message naming it, with what was typed kept."""
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
    if request.method != "POST":
        return render(request, "evaluation/eval_new.html", _new_form_context(project, request.GET))
    try:
        form = new_evaluation_from(project, request.POST)
        run = eval_run_create(
            project=project,
            dataset_version=form.dataset_version,
            split=form.split,
            candidates=form.candidates,
            user=request.user,
            max_new_tokens=form.max_new_tokens,
            primary_metric=form.primary_metric,
            regex_check=form.regex_check,
            contains_check=form.contains_check,
            judge=form.judge,
        )
    except ApplicationError as error:
        context = _new_form_context(project, request.POST)
        context["error"] = error.message
        context["error_field"] = error.extra.get("field", "")
        return render(request, "evaluation/eval_new.html", context, status=400)
    return redirect("eval_detail", project_id, run.pk)


def _pair(run: EvalRun, params: QueryDict) -> tuple[Candidate, Candidate]:
    """The reference candidate and the one chosen with ``b`` (default: the second)."""
    candidates = list(run.candidates.all())
    if len(candidates) < 2:
        raise ApplicationError("Rating compares two candidates; this run has one.")
    chosen = params.get("b") or str(candidates[1].pk)
    other = next((c for c in candidates[1:] if str(c.pk) == chosen), None)
    if other is None:
        raise ApplicationError(
            f"b: no other candidate {chosen!r} in this run.", extra={"field": "b"}
        )
    return candidates[0], other


@login_required
def eval_rate(request: AppRequest, project_id: int, run_id: int) -> HttpResponse:
    """Blind pairwise rating, one item at a time, keys 1 (left), 2 (tie), 3 (right)."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
    run = eval_run_in_project(project, run_id)
    candidate_a, candidate_b = _pair(run, request.POST if request.method == "POST" else request.GET)
    if request.method == "POST":
        item_id = whole_number(request.POST, "item")
        try:
            choice = choice_from_side(request.POST.get("side", ""), item_id, request.user.pk)
        except ValueError as error:
            raise ApplicationError(str(error), extra={"field": "side"}) from error
        human_preference_record(
            candidate_a=candidate_a,
            candidate_b=candidate_b,
            item_id=item_id,
            rater=request.user,
            choice=choice,
        )
    context = {
        "project": project,
        "role": role,
        "run": run,
        "candidate_b": candidate_b,
        "others": list(run.candidates.all())[1:],
        "card": next_card(candidate_a, candidate_b, request.user),
    }
    template = "evaluation/rate.html#rate-card" if request.htmx else "evaluation/rate.html"
    return render(request, template, context)
