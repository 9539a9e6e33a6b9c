"""Pages of application keys: the project's keys for every member; a create form (the new key
shown once, on the answer to the form) and a revoke button for leads and admins. The request
log browser: filters and keyset pages for every member; "send to review" for reviewers, leads
and admins. Fallback routes: every alias with its route and the route's last 24 hours for
every member; set, change and remove for leads and admins. Experiments: the list and each
one's results for every member; create (the form in ``experiment_form``), start, stop and
conclude for leads and admins."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from catalog.selectors import active_base_models, base_model_by_key
from datasets.selectors import dataset_in_project, datasets_of
from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, parse_id
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from registry.models import Alias, ModelVersion
from registry.selectors import model_versions_of, registered_models_of

from .experiment_form import (
    ExperimentForm,
    experiment_form_blank,
    experiment_form_from,
    experiment_form_refused,
    experiment_wanted,
)
from .models import (
    KEY_NAME_MAX_LENGTH,
    MAX_ARM_WEIGHT,
    MAX_COOLDOWN_SECONDS,
    MAX_FAILURES_TO_OPEN,
    MAX_RATE_LIMIT_PER_MINUTE,
    MAX_TIMEOUT_SECONDS,
    MIN_ROUTE_SECONDS,
    Experiment,
    FallbackRoute,
    RequestStatus,
)
from .selectors import (
    FeedbackFilter,
    RequestLogFilters,
    TrafficFilter,
    aliases_of,
    application_key_in_project,
    application_keys_of,
    experiment_arm_results,
    experiment_in_project,
    experiment_verdict,
    experiments_of,
    fallback_route_in_project,
    fallback_routes_of,
    log_cursor_parse,
    request_log_page,
    request_logs_filtered,
    request_outcomes,
)
from .services import (
    CreatedApplicationKey,
    RouteSettings,
    application_key_create,
    application_key_revoke,
    experiment_conclude,
    experiment_create,
    experiment_start,
    experiment_stop,
    fallback_route_change,
    fallback_route_create,
    fallback_route_remove,
    request_logs_send_to_review,
)


def _expiry_from(raw: str) -> datetime | None:
    """The form's expiry (a datetime-local field, read as UTC); empty: no expiry."""
    if not raw.strip():
        return None
    try:
        parsed = parse_datetime(raw.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApplicationError(
            "expires_at: a date and time such as 2027-01-31T18:00.", extra={"field": "expires_at"}
        )
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _rate_limit_from(raw: str) -> int | None:
    """The form's rate limit; empty: the site's default."""
    if not raw.strip():
        return None
    parsed = parse_id(raw.strip())
    if parsed is None or not 1 <= parsed <= MAX_RATE_LIMIT_PER_MINUTE:
        raise ApplicationError(
            f"rate_limit_per_minute: a whole number from 1 to {MAX_RATE_LIMIT_PER_MINUTE}.",
            extra={"field": "rate_limit_per_minute"},
        )
    return parsed


def _page(
    request: AppRequest,
    *,
    project: Project,
    role: str,
    created: CreatedApplicationKey | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "role": role,
        "keys": application_keys_of(project),
        "created": created,
        "error": error,
        "form": request.POST if error else {},
        "name_max_length": KEY_NAME_MAX_LENGTH,
        "max_rate_limit": MAX_RATE_LIMIT_PER_MINUTE,
        "now": timezone.now(),
        "can": role_flags(role),
    }
    response = render(request, "serving/app_keys.html", context, status=status)
    if created is not None:
        # The only time the plaintext is on a page: no cache, history or proxy may keep it.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def app_keys(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: the project's keys. POST: create one and show it, this once."""
    if request.method == "GET":
        project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return _page(request, project=project, role=role)
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
    )
    try:
        created = application_key_create(
            project=project,
            user=request.user,
            name=request.POST.get("name", ""),
            expires_at=_expiry_from(request.POST.get("expires_at", "")),
            rate_limit_per_minute=_rate_limit_from(request.POST.get("rate_limit_per_minute", "")),
        )
    except ApplicationError as refused:
        return _page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    return _page(request, project=project, role=role, created=created)


@login_required
@require_POST
def app_key_revoke(request: AppRequest, project_id: int, key_id: int) -> HttpResponse:
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_APP_KEYS
    )
    key = application_key_revoke(key=application_key_in_project(project, key_id), user=request.user)
    messages.success(request, f"Revoked {key.name} ({key.prefix}…): it no longer works.")
    return redirect("app_keys", project_id)


# --- the request log ----------------------------------------------------------------------------

TEXT_SEARCH_MAX_LENGTH = 200


def _date_from(raw: str, *, field: str) -> datetime | None:
    """A filter's date or date and time (read as UTC); empty: no bound."""
    if not raw.strip():
        return None
    text = raw.strip()
    try:
        parsed = parse_datetime(text) or parse_datetime(f"{text}T00:00")
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApplicationError(
            f"{field}: a date such as 2027-01-31 or a date and time such as 2027-01-31T18:00.",
            extra={"field": field},
        )
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _filters_from(request: AppRequest) -> RequestLogFilters:
    query = request.GET
    version_raw = query.get("version", "").strip()
    version_id = parse_id(version_raw) if version_raw else None
    if version_raw and version_id is None:
        raise ApplicationError("version: choose a model version.", extra={"field": "version"})
    status = query.get("status", "").strip()
    if status and status not in RequestStatus.values:
        raise ApplicationError(
            f"status: one of {', '.join(RequestStatus.values)}.", extra={"field": "status"}
        )
    text = query.get("q", "").strip()
    if len(text) > TEXT_SEARCH_MAX_LENGTH:
        raise ApplicationError(
            f"q: at most {TEXT_SEARCH_MAX_LENGTH} characters.", extra={"field": "q"}
        )
    feedback = query.get("feedback", "").strip()
    if feedback and feedback not in FeedbackFilter.values:
        raise ApplicationError(
            f"feedback: one of {', '.join(FeedbackFilter.values)}.", extra={"field": "feedback"}
        )
    traffic = query.get("traffic", "").strip() or TrafficFilter.ANSWERED
    if traffic not in TrafficFilter.values:
        raise ApplicationError(
            f"traffic: one of {', '.join(TrafficFilter.values)}.", extra={"field": "traffic"}
        )
    return RequestLogFilters(
        feedback=feedback,
        traffic=traffic,
        served_version_id=version_id,
        experiment_arm=query.get("arm", "").strip(),
        status=status,
        since=_date_from(query.get("since", ""), field="since"),
        until=_date_from(query.get("until", ""), field="until"),
        text=text,
    )


@login_required
@require_GET
def request_logs(request: AppRequest, project_id: int) -> HttpResponse:
    """The project's logged requests, newest first, filtered, a keyset page at a time."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_TRAFFIC
    )
    filters = _filters_from(request)
    after, before = request.GET.get("after", ""), request.GET.get("before", "")
    page = request_log_page(
        request_logs_filtered(project, filters),
        older_than=log_cursor_parse(after, field="after") if after else None,
        newer_than=log_cursor_parse(before, field="before") if before else None,
    )
    # The filters stay in the page links; the cursor is replaced.
    kept = request.GET.copy()
    for cursor_name in ("after", "before"):
        kept.pop(cursor_name, None)
    can = role_flags(role)
    outcomes = request_outcomes(project, [row.request_id for row in page.rows])
    context = {
        "project": project,
        "role": role,
        "can": can,
        "page": page,
        # Each row with the feedback and events the application posted on it.
        "entries": [(row, outcomes[row.request_id]) for row in page.rows],
        "feedback_choices": FeedbackFilter.choices,
        "traffic_choices": TrafficFilter.choices,
        "filters": filters,
        "query": request.GET,
        "kept_query": kept.urlencode(),
        "statuses": RequestStatus.choices,
        "versions": model_versions_of(project).select_related("registered_model"),
        "datasets": datasets_of(project) if can.send_traffic_to_review else [],
    }
    return render(request, "serving/request_logs.html", context)


@login_required
@require_POST
def request_logs_send(request: AppRequest, project_id: int) -> HttpResponse:
    """Send the chosen requests to review as pending examples of the chosen dataset."""
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.SEND_TRAFFIC_TO_REVIEW
    )
    dataset_id = parse_id(request.POST.get("dataset", "").strip())
    if dataset_id is None:
        raise ApplicationError("dataset: choose a dataset.", extra={"field": "dataset"})
    request_ids = request.POST.getlist("request")
    created = request_logs_send_to_review(
        project=project,
        request_ids=request_ids,
        dataset=dataset_in_project(project, dataset_id),
        user=request.user,
        corrections={rid: request.POST.get(f"correction-{rid}", "") for rid in request_ids},
    )
    messages.success(
        request,
        f"Sent {len(created)} of {len(set(request_ids))} requests to review "
        "(a request already sent is not sent again).",
    )
    return redirect("request_logs", project_id)


# --- experiments --------------------------------------------------------------------------------


def _experiments_page(
    request: AppRequest, *, project: Project, role: str, form: ExperimentForm, status: int = 200
) -> HttpResponse:
    can = role_flags(role)
    context = {
        "project": project,
        "role": role,
        "can": can,
        "experiments": experiments_of(project),
        "form": form,
        "max_arm_weight": MAX_ARM_WEIGHT,
    }
    if can.manage_experiments:
        context |= {
            "registered_models": registered_models_of(project).order_by("name"),
            "versions": model_versions_of(project).order_by("registered_model__name", "number"),
            "base_models": active_base_models(),
        }
    return render(request, "serving/experiments.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def experiments(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: the project's experiments, and for leads and admins a form creating one. POST
    (leads, admins): create a draft experiment through the service the API uses; refused, the
    form comes back as typed with each error beside its input."""
    if request.method == "GET":
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.READ_EXPERIMENTS
        )
        return _experiments_page(
            request, project=project, role=role, form=experiment_form_blank(project)
        )
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_EXPERIMENTS
    )
    form = experiment_form_from(request.POST)
    wanted = experiment_wanted(project, form)
    if wanted is None:
        return _experiments_page(request, project=project, role=role, form=form, status=400)
    try:
        experiment = experiment_create(
            project=project,
            user=request.user,
            name=wanted.name,
            registered_model=wanted.registered_model,
            alias=wanted.alias,
            success_event=wanted.success_event,
            arms=wanted.arms,
            shadow_share=wanted.shadow_share,
        )
    except ApplicationError as refused:
        experiment_form_refused(form, wanted, refused)
        return _experiments_page(
            request, project=project, role=role, form=form, status=refused.status_code
        )
    messages.success(
        request, f"Created {experiment.name}, a draft: nothing changes until you start it."
    )
    return redirect("experiment_page", project_id, experiment.pk)


@login_required
@require_GET
def experiment_detail(request: AppRequest, project_id: int, experiment_id: int) -> HttpResponse:
    """One experiment: per arm its requests, success rate and feedback score with intervals,
    latency, error rate, cost per 1,000 requests, and the verdict; a lead's buttons."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_EXPERIMENTS
    )
    experiment = experiment_in_project(project, experiment_id)
    results = experiment_arm_results(experiment)
    context = {
        "project": project,
        "role": role,
        "can": role_flags(role),
        "experiment": experiment,
        "results": results,
        "verdict": experiment_verdict(experiment, results),
    }
    return render(request, "serving/experiment_detail.html", context)


_EXPERIMENT_ACTIONS: dict[str, tuple[Callable[..., Experiment], str]] = {
    "start": (experiment_start, "Started: the alias's traffic is split between the arms."),
    "stop": (experiment_stop, "Stopped: the alias serves what it points at again."),
    "conclude": (experiment_conclude, "Concluded."),
}


# --- fallback routes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasRoute:
    """One alias on the routes page: the version it serves, its route (None: none yet), and
    what the route may point at (the model's other versions)."""

    alias: Alias
    route: FallbackRoute | None
    versions: list[ModelVersion]


def _alias_routes(project: Project) -> list[AliasRoute]:
    routes = {route.alias_id: route for route in fallback_routes_of(project)}
    versions: dict[int, list[ModelVersion]] = {}
    for version in model_versions_of(project).order_by("-number"):
        versions.setdefault(version.registered_model_id, []).append(version)
    return [
        AliasRoute(
            alias=alias,
            route=routes.get(alias.pk),
            versions=[
                version
                for version in versions.get(alias.registered_model_id, [])
                if version.pk != alias.model_version_id
            ],
        )
        for alias in aliases_of(project)
    ]


def _routes_page(
    request: AppRequest, *, project: Project, role: str, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "project": project,
        "alias_routes": _alias_routes(project),
        "base_models": active_base_models(),
        "error": error,
        "form": request.POST if error else {},
        "can": role_flags(role),
        "min_seconds": MIN_ROUTE_SECONDS,
        "max_timeout": MAX_TIMEOUT_SECONDS,
        "max_cooldown": MAX_COOLDOWN_SECONDS,
        "max_failures": MAX_FAILURES_TO_OPEN,
    }
    return render(request, "serving/fallback_routes.html", context, status=status)


def _number_from(raw: str, *, field: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise ApplicationError(
            f"{field}: a number from {low:g} to {high:g}.", extra={"field": field}
        )
    return value


def _route_settings_from(project: Project, form: QueryDict) -> RouteSettings:
    """The form's route: its target (``version:<id>`` or ``base:<catalog key>``) and numbers."""
    kind, _, value = form.get("target", "").partition(":")
    version = base = None
    if kind == "version" and (version_id := parse_id(value)) is not None:
        version = model_versions_of(project).filter(pk=version_id).first()
    elif kind == "base":
        base = base_model_by_key(value)
    if version is None and base is None:
        raise ApplicationError(
            "target: choose a version or a base model to fall back to.", extra={"field": "target"}
        )
    failures = _number_from(
        form.get("failures_to_open", ""), field="failures_to_open", low=1, high=MAX_FAILURES_TO_OPEN
    )
    if failures != int(failures):
        raise ApplicationError(
            "failures_to_open: a whole number.", extra={"field": "failures_to_open"}
        )
    return RouteSettings(
        fallback_version=version,
        fallback_base_model=base,
        timeout_seconds=_number_from(
            form.get("timeout_seconds", ""),
            field="timeout_seconds",
            low=MIN_ROUTE_SECONDS,
            high=MAX_TIMEOUT_SECONDS,
        ),
        failures_to_open=int(failures),
        cooldown_seconds=_number_from(
            form.get("cooldown_seconds", ""),
            field="cooldown_seconds",
            low=MIN_ROUTE_SECONDS,
            high=MAX_COOLDOWN_SECONDS,
        ),
        enabled=form.get("enabled") == "on",
    )


@login_required
@require_http_methods(["GET", "POST"])
def fallback_routes(request: AppRequest, project_id: int) -> HttpResponse:
    """GET: every alias of the project's models with its fallback route and that route's last
    24 hours. POST (leads, admins): set an alias's route, or change the one it has."""
    if request.method == "GET":
        project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return _routes_page(request, project=project, role=role)
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_ROUTES
    )
    alias_id = parse_id(request.POST.get("alias", ""))
    alias = aliases_of(project).filter(pk=alias_id).first() if alias_id is not None else None
    try:
        if alias is None:
            raise ApplicationError(
                "alias: choose one of the project's aliases.", extra={"field": "alias"}
            )
        wanted = _route_settings_from(project, request.POST)
        existing = fallback_routes_of(project).filter(alias=alias).first()
        if existing is None:
            fallback_route_create(alias=alias, user=request.user, wanted=wanted)
        else:
            fallback_route_change(route=existing, user=request.user, wanted=wanted)
    except ApplicationError as refused:
        return _routes_page(
            request, project=project, role=role, error=refused.message, status=refused.status_code
        )
    messages.success(
        request, f"Saved the fallback route of {alias.registered_model.name}/{alias.name}."
    )
    return redirect("fallback_routes", project_id)


@login_required
@require_POST
def experiment_act(
    request: AppRequest, project_id: int, experiment_id: int, action: str
) -> HttpResponse:
    """Start, stop or conclude; a refusal (the gate's included) shows as the page's error."""
    project, _ = project_for(
        user=request.user, project_id=project_id, action=Action.MANAGE_EXPERIMENTS
    )
    if action not in _EXPERIMENT_ACTIONS:
        raise Http404("No such experiment action.")
    service, done = _EXPERIMENT_ACTIONS[action]
    experiment = service(
        experiment=experiment_in_project(project, experiment_id), user=request.user
    )
    if experiment.promoted_version is not None:
        done = f"Concluded: {experiment.promoted_version} is in production now."
    messages.success(request, done)
    return redirect("experiment_page", project_id, experiment_id)


@login_required
@require_POST
def route_remove(request: AppRequest, project_id: int, route_id: int) -> HttpResponse:
    """Remove a fallback route (a form's POST: a link or an image must not remove one)."""
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.MANAGE_ROUTES)
    route = fallback_route_in_project(project, route_id)
    name = f"{route.alias.registered_model.name}/{route.alias.name}"
    fallback_route_remove(route=route)
    messages.success(request, f"Removed the fallback route of {name}: it serves without one now.")
    return redirect("fallback_routes", project_id)
