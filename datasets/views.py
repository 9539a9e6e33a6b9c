"""Pages of one dataset and its frozen versions: the dataset page with its answer contract form,
synchronous or worker-run imports started from it, freezing a version (with its overlap and
contract checks) or a held-out test set, a version's page (a test set's overlap with the training
versions, checked again on request), its comparison with another version, its export, and moving
a held-out example into training. Import progress pages are in imports/views.py, review pages in
review/views.py, quality pages in quality/views.py."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods, require_POST

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest, query_id
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags

from .contracts import JSON_SCHEMA, KIND_LABELS, LABEL_SET, REGEX, describe_contract
from .formats import AUTO, EXPORT_FORMATS, EXPORT_LABELS, OPENAI_CHAT
from .held_out import example_origin, validation_shrink
from .imports.services import (
    ImportRejected,
    ImportRequest,
    ImportRoute,
    import_format_check,
    import_submit,
)
from .models import Dataset, DatasetVersion, Split
from .quality.stats import MIN_TRAINING_EXAMPLES_PER_LABEL
from .selectors import (
    dataset_in_project,
    dataset_version_in_project,
    example_in_project,
    export_content_type,
    export_filename,
    label_tally,
    previous_version,
    status_counts,
    version_compared_with,
    version_diff,
    version_export_check,
    version_export_lines,
)
from .services import (
    DEFAULT_VALIDATION_FRACTION,
    SplitOverlapError,
    approved_label_counts,
    dataset_contract_set,
    dataset_quality_target_set,
    dataset_version_freeze,
    example_move_to_training,
)
from .test_sets import (
    overlapping_test_sets,
    overlaps_check,
    stored_overlaps,
    unchecked_training_versions,
)

# The guide: start with 100 to 500 high-quality examples.
RECOMMENDED_MIN_EXAMPLES = 100


def _dataset_context(
    request: AppRequest, project_id: int, dataset_id: int, action: Action
) -> dict[str, object]:
    project, role = project_for(user=request.user, project_id=project_id, action=action)
    dataset = dataset_in_project(project, dataset_id)
    return {"project": project, "role": role, "dataset": dataset}


def _render_dataset(
    request: AppRequest, context: dict[str, object], status: int = 200
) -> HttpResponse:
    dataset = context["dataset"]
    assert isinstance(dataset, Dataset)
    role = str(context["role"])
    counts = status_counts(dataset)
    context.update(
        {
            "counts": counts,
            "versions": dataset.versions.all(),
            "imports": dataset.imports.order_by("-id")[:5],
            "recent_examples": dataset.examples.order_by("-updated_at")[:20],
            "can": role_flags(role),
            "contract_description": describe_contract(dataset.answer_contract),
            "label_tally": label_tally(dataset, threshold=MIN_TRAINING_EXAMPLES_PER_LABEL),
            "contract_kinds": list(KIND_LABELS.items()),
            "default_validation_fraction": DEFAULT_VALIDATION_FRACTION,
            "few_approved": counts["approved"] < RECOMMENDED_MIN_EXAMPLES,
            "recommended_min": RECOMMENDED_MIN_EXAMPLES,
        }
    )
    return render(request, "datasets/dataset_detail.html", context, status=status)


def contract_form_text(contract: dict[str, object]) -> str:
    """The contract's value as the form's text box shows it."""
    kind = contract.get("kind")
    labels = contract.get("labels")
    if kind == LABEL_SET and isinstance(labels, list):
        return "\n".join(str(label) for label in labels)
    if kind == JSON_SCHEMA:
        return json.dumps(contract.get("schema"), indent=2, ensure_ascii=False)
    if kind == REGEX:
        return str(contract.get("pattern", ""))
    return ""


def contract_from_form(kind: str, text: str) -> dict[str, object]:
    """The contract a lead typed: labels one per line, a JSON Schema, or a pattern."""
    if not kind:
        return {}
    if kind == LABEL_SET:
        return {"kind": kind, "labels": [line for line in text.splitlines() if line.strip()]}
    if kind == JSON_SCHEMA:
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as error:
            raise ApplicationError(
                f"answer_contract.schema: not JSON: {error.msg} at line {error.lineno} "
                f"column {error.colno}.",
                extra={"field": "answer_contract.schema"},
            ) from error
        return {"kind": kind, "schema": schema}
    # A text box ends lines with CR LF; the pattern is what was typed, without the last newline.
    return {"kind": kind, "pattern": text.rstrip("\r\n")}


def _contract_form(
    dataset: Dataset, kind: str | None = None, text: str | None = None
) -> dict[str, object]:
    contract = dataset.answer_contract
    return {
        "kind": contract.get("kind", "") if kind is None else kind,
        "text": contract_form_text(contract) if text is None else text,
    }


@login_required
def dataset_detail(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    context = _dataset_context(request, project_id, dataset_id, Action.VIEW)
    dataset = context["dataset"]
    assert isinstance(dataset, Dataset)
    context["contract_form"] = _contract_form(dataset)
    if request.GET.get("derive") == "labels":
        # Deriving shows the approved answers' labels with counts and fills in the form; the
        # lead still saves it (nothing changes until then).
        project_for(user=request.user, project_id=project_id, action=Action.SET_CONTRACT)
        try:
            contract, counts = approved_label_counts(dataset=dataset)
        except ApplicationError as error:
            context["contract_error"] = error.message
        else:
            context["derived_labels"] = counts
            context["contract_form"] = _contract_form(
                dataset, kind=LABEL_SET, text=contract_form_text(contract)
            )
    return _render_dataset(request, context)


@login_required
@require_POST
def dataset_contract(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    context = _dataset_context(request, project_id, dataset_id, Action.SET_CONTRACT)
    dataset = context["dataset"]
    assert isinstance(dataset, Dataset)
    kind = request.POST.get("kind", "")
    text = request.POST.get("value", "")
    try:
        dataset_contract_set(dataset=dataset, contract=contract_from_form(kind, text))
    except ApplicationError as error:
        dataset.refresh_from_db()
        context["contract_error"] = error.message
        context["contract_form"] = _contract_form(dataset, kind=kind, text=text)
        return _render_dataset(request, context, status=error.status_code)
    messages.success(
        request, f"Answer contract saved: {describe_contract(dataset.answer_contract)}."
    )
    return redirect("dataset_detail", project_id, dataset_id)


def quality_target_from_form(text: str) -> float | None:
    """The target a lead typed: a score from above 0 to 1; empty clears it."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ApplicationError(
            f"quality_target: {text!r} is not a number; type a score such as 0.8 (80 %), or "
            "nothing to clear the target.",
            extra={"field": "quality_target"},
        ) from None


@login_required
@require_POST
def dataset_quality_target(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """Set or clear the score a model must reach to be good enough (the advisor checks it)."""
    context = _dataset_context(request, project_id, dataset_id, Action.SET_CONTRACT)
    dataset = context["dataset"]
    assert isinstance(dataset, Dataset)
    text = request.POST.get("quality_target", "")
    try:
        dataset_quality_target_set(dataset=dataset, quality_target=quality_target_from_form(text))
    except ApplicationError as error:
        dataset.refresh_from_db()
        context["quality_target_error"] = error.message
        context["quality_target_text"] = text
        return _render_dataset(request, context, status=error.status_code)
    target = dataset.quality_target
    messages.success(
        request,
        "Quality target cleared."
        if target is None
        else f"Quality target saved: {target:g} ({target * 100:g} %).",
    )
    return redirect("dataset_detail", project_id, dataset_id)


@login_required
@require_POST
def dataset_import(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """Small plain JSONL files import at once; CSV goes to the column mapping; big, compressed
    and spreadsheet files to the worker."""
    context = _dataset_context(request, project_id, dataset_id, Action.IMPORT_EXAMPLES)
    dataset = context["dataset"]
    assert isinstance(dataset, Dataset)
    upload = request.FILES.get("file")
    if upload is None:
        context["import_error"] = "Choose a JSONL file to import."
        return _render_dataset(request, context, status=400)
    try:
        requested = ImportRequest(
            format=import_format_check(request.POST.get("format") or AUTO),
            valid_lines_only=request.POST.get("valid_lines_only") == "on",
            # The form offers the project's default; a form without the field gets it too.
            default_system_prompt=request.POST.get("default_system_prompt"),
        )
        submission = import_submit(
            dataset=dataset, upload=upload, user=request.user, request=requested
        )
        if submission.route is ImportRoute.NEEDS_COLUMNS:
            return redirect("import_mapping", project_id, submission.batch.pk)
        if submission.route is ImportRoute.QUEUED:
            return redirect("import_detail", project_id, submission.batch.pk)
        batch = submission.batch
    except ImportRejected as rejected:
        context["import_error"] = rejected.message
        context["import_line_errors"] = rejected.extra.get("errors", [])
        return _render_dataset(request, context, status=400)
    except ApplicationError as error:
        context["import_error"] = error.message
        return _render_dataset(request, context, status=error.status_code)
    skipped = f", skipped {len(batch.errors)} line(s) with errors" if batch.errors else ""
    broken = batch.contract_violations.get("count", 0)
    if broken:
        lines = [str(v["line"]) for v in batch.contract_violations["lines"][:10]]
        more = " and more" if broken > len(lines) else ""
        skipped += (
            f"; {broken} break the answer contract (line(s) {', '.join(lines)}{more}), "
            "flagged for review"
        )
    messages.success(
        request, f"Imported {batch.imported_count} example(s) from {batch.filename}{skipped}."
    )
    return redirect("dataset_detail", project_id, dataset_id)


@login_required
@require_POST
def dataset_freeze(request: AppRequest, project_id: int, dataset_id: int) -> HttpResponse:
    context = _dataset_context(request, project_id, dataset_id, Action.FREEZE)
    try:
        fraction = float(request.POST.get("validation_fraction") or DEFAULT_VALIDATION_FRACTION)
        seed = int(request.POST.get("seed") or 42)
    except ValueError:
        context["freeze_error"] = "Seed must be a whole number and the fraction a decimal number."
        return _render_dataset(request, context, status=400)
    # Shown again as typed when the freeze is refused, so an override only adds a reason.
    context["freeze_values"] = {
        "validation_fraction": request.POST.get("validation_fraction", ""),
        "seed": request.POST.get("seed", ""),
        "note": request.POST.get("note", ""),
        "resplit": request.POST.get("resplit") == "on",
        "contract_override_reason": request.POST.get("contract_override_reason", ""),
        "test_set": request.POST.get("test_set") == "on",
    }
    try:
        version = dataset_version_freeze(
            dataset=context["dataset"],  # type: ignore[arg-type]
            user=request.user,
            seed=seed,
            validation_fraction=fraction,
            note=request.POST.get("note", ""),
            resplit=request.POST.get("resplit") == "on",
            overlap_override_reason=request.POST.get("overlap_override_reason", ""),
            contract_override_reason=request.POST.get("contract_override_reason", ""),
            test_set=request.POST.get("test_set") == "on",
        )
    except SplitOverlapError as refused:
        context["freeze_error"] = refused.message
        context["overlaps"] = refused.extra["overlaps"]
        context["overlap_count"] = refused.extra["overlap_count"]
        return _render_dataset(request, context, status=400)
    except ApplicationError as error:
        context["freeze_error"] = error.message
        context["contract_violations"] = error.extra.get("contract_violations", [])
        return _render_dataset(request, context, status=400)
    messages.success(
        request, f"Froze {version} ({version.example_count} examples){_label_gaps(version)}."
    )
    return redirect("version_detail", project_id, version.pk)


def _label_gaps(version: DatasetVersion) -> str:
    """What the freeze message adds under a label-set contract: the labels the split could
    not put on both sides (the version page names them)."""
    per_label = version.readiness.get("per_label") or {}
    gaps = [
        f"{len(per_label[key])} {words}"
        for key, words in (
            ("single_example", "label(s) with a single example stay in training"),
            ("without_validation", "label(s) have no validation example"),
            ("without_training", "label(s) have no training example"),
        )
        if per_label.get(key)
    ]
    return f"; {', '.join(gaps)}" if gaps else ""


@login_required
def version_detail(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    version = dataset_version_in_project(project, version_id)
    previous = previous_version(version)
    context = {
        "project": project,
        "role": role,
        "version": version,
        "contract_description": describe_contract(version.answer_contract),
        "items": version.items.all()[:50],
        "jobs": version.training_jobs.select_related("base_model"),
        "searches": version.training_searches.order_by("-created_at"),
        "can": role_flags(role),
        "previous": previous,
        "changes": version_diff(previous, version) if previous else None,
        "export_formats": [(fmt, EXPORT_LABELS[fmt]) for fmt in EXPORT_FORMATS],
        **_test_set_context(version),
    }
    return render(request, "datasets/version_detail.html", context)


def _test_set_context(version: DatasetVersion) -> dict[str, object]:
    """What a version page says about test sets: a test set's overlap with each training
    version, or the test sets a training version shares inputs with."""
    if not version.is_test_set:
        return {"overlapping_test_sets": overlapping_test_sets(version)}
    rows = stored_overlaps(version)
    return {
        "test_overlaps": rows,
        "test_overlap_total": sum(row.total for row in rows),
        "test_overlaps_checked_at": parse_datetime(version.test_overlaps.get("checked_at", "")),
        "unchecked_training_versions": unchecked_training_versions(version),
    }


@login_required
@require_POST
def test_overlaps_check_page(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """Check a test set against every training version again (the version page's button)."""
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.FREEZE)
    version = overlaps_check(test_set=dataset_version_in_project(project, version_id))
    total = sum(row.total for row in stored_overlaps(version))
    messages.success(
        request,
        f"Checked {version} against {len(version.test_overlaps['versions'])} training "
        f"version(s): {total} shared input pair(s).",
    )
    return redirect("version_detail", project_id, version_id)


@login_required
def version_compare(request: AppRequest, project_id: int, version_id: int) -> HttpResponse:
    """Diff of this version against another version of the same dataset (default: previous)."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    newer = dataset_version_in_project(project, version_id)
    older = version_compared_with(newer, query_id(request, "against"))
    context = {
        "project": project,
        "role": role,
        "diff": version_diff(older, newer),
        "versions": newer.dataset.versions.all(),
    }
    return render(request, "datasets/version_compare.html", context)


@login_required
def version_export(request: AppRequest, project_id: int, version_id: int) -> StreamingHttpResponse:
    project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    version = dataset_version_in_project(project, version_id)
    split = request.GET.get("split") or None
    if split not in (None, *Split.values):
        raise ApplicationError(
            f"split must be one of {', '.join(Split.values)}.", extra={"field": "split"}
        )
    fmt = request.GET.get("format") or OPENAI_CHAT
    version_export_check(version, split=split, fmt=fmt)
    # Streamed so a large version is never held in memory as one string.
    response = StreamingHttpResponse(
        version_export_lines(version, split=split, fmt=fmt),
        content_type=export_content_type(fmt),
    )
    filename = export_filename(version, split=split, fmt=fmt)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def example_move_to_training_page(
    request: AppRequest, project_id: int, example_id: int
) -> HttpResponse:
    """GET: what moving a derived example to training costs the evaluation set; POST: do it."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.FREEZE)
    example = example_in_project(project, example_id)
    if request.method == "POST":
        _, shrink = example_move_to_training(
            example=example, user=request.user, reason=request.POST.get("reason", "")
        )
        messages.success(request, f"Example {example.pk} goes to training. {shrink.warning}")
        return redirect(
            f"{reverse('review_queue', args=[project_id, example.dataset_id])}?example={example.pk}"
        )
    if example.derived_from_id is None:
        raise ApplicationError(
            f"Example {example.pk} was not made from another example; there is no origin to "
            "retire, and it takes the side of the split it is drawn into."
        )
    context = {
        "project": project,
        "role": role,
        "dataset": example.dataset,
        "example": example,
        "origin": example_origin(example),
        "shrink": validation_shrink(example),
    }
    return render(request, "datasets/move_to_training.html", context)
