"""Pages of a background import: choose the CSV columns, then watch the progress and the result."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render

from datasets.selectors import import_batch_in_project
from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action

from ..formats import CsvMapping
from ..models import ImportStatus
from .services import (
    ImportRequest,
    import_batch_abandon,
    import_batch_set_mapping,
    import_batch_start,
    import_preview,
    import_progress,
    needs_column_mapping,
)

PREVIEW_ROWS = 5


def _mapping_from_form(request: AppRequest) -> CsvMapping:
    return CsvMapping(
        input_column=request.POST.get("input_column", ""),
        output_column=request.POST.get("output_column", ""),
        system_column=request.POST.get("system_column", ""),
        system_prompt=request.POST.get("system_prompt", "").strip(),
        metadata_columns=tuple(request.POST.getlist("metadata_columns")),
    )


@login_required
def import_mapping(request: AppRequest, project_id: int, batch_id: int) -> HttpResponse:
    """Show the CSV's header and first rows; on POST, take the chosen columns and start."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.IMPORT_EXAMPLES
    )
    batch = import_batch_in_project(project, batch_id)
    if batch.status != ImportStatus.QUEUED:
        return redirect("import_detail", project_id, batch.pk)
    context: dict[str, object] = {"project": project, "role": role, "batch": batch}
    try:
        header, rows = import_preview(batch, rows=PREVIEW_ROWS)
    except ApplicationError as error:
        # No columns to choose from: the import cannot go on, so it ends here, with the reason.
        import_batch_abandon(batch=batch, message=f"{error.message} Nothing was imported.")
        return redirect("import_detail", project_id, batch.pk)
    chosen = ImportRequest.from_options(batch.options).csv_mapping or _guess_mapping(header)
    context.update({"header": header, "rows": rows, "chosen": chosen})
    if request.method != "POST":
        return render(request, "datasets/import_mapping.html", context)
    mapping = _mapping_from_form(request)
    try:
        import_batch_set_mapping(batch=batch, mapping=mapping)
    except ApplicationError as error:
        context.update({"mapping_error": error.message, "chosen": mapping})
        return render(request, "datasets/import_mapping.html", context, status=400)
    import_batch_start(batch=batch)
    return redirect("import_detail", project_id, batch.pk)


def _guess_mapping(header: list[str]) -> CsvMapping:
    """Preselect columns whose names say what they hold; the user confirms or changes them."""
    lowered = [name.lower() for name in header]

    def first(*words: str) -> str:
        for word in words:
            for name, low in zip(header, lowered, strict=True):
                if word in low:
                    return name
        return ""

    input_column = first("input", "prompt", "question", "ticket", "user") or header[0]
    output_column = first("ideal", "output", "answer", "completion", "response", "label")
    if not output_column or output_column == input_column:
        output_column = next((name for name in header if name != input_column), "")
    return CsvMapping(
        input_column=input_column,
        output_column=output_column,
        system_column=first("system"),
    )


@login_required
def import_detail(request: AppRequest, project_id: int, batch_id: int) -> HttpResponse:
    """Progress while the import runs (htmx polls the partial), then the counts and errors."""
    project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
    batch = import_batch_in_project(project, batch_id)
    context = {
        "project": project,
        "role": role,
        "batch": batch,
        "dataset": batch.dataset,
        "progress": import_progress(batch),
        "needs_mapping": batch.status == ImportStatus.QUEUED
        and "csv" not in batch.options
        and needs_column_mapping(
            filename=batch.filename, requested_format=str(batch.options.get("format", ""))
        ),
    }
    template = (
        "datasets/import_detail.html#import-progress"
        if request.htmx
        else "datasets/import_detail.html"
    )
    return render(request, template, context)
