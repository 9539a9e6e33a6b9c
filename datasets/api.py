"""API for datasets: create, import JSONL, review examples, freeze versions, export."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import renderers, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import (
    PAGINATION_PARAMETERS,
    IdField,
    InputSerializer,
    ListQueryInput,
    acting_user,
    page_serializer,
    paginated_response,
    refuse_any_input,
)
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action, role_allows

from .contracts import contract_violation, describe_contract
from .formats import ALL_FORMATS, AUTO, EXPORT_FORMATS, OPENAI_CHAT, CsvMapping
from .imports.services import (
    ImportRequest,
    ImportRoute,
    import_progress,
    import_submit,
    needs_column_mapping,
)
from .models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    ReviewAction,
    Split,
)
from .quality.stats import MIN_TRAINING_EXAMPLES_PER_LABEL
from .review.selectors import (
    STATUS_CHOICES,
    QueueFilter,
    agreement_summary,
    default_assignee,
    filtered_examples,
    next_in_queue,
    queue_counts,
    queue_examples,
    selection_preview,
)
from .review.services import (
    BULK_ACTIONS,
    BulkAction,
    bulk_reviewers,
    example_comment_add,
    example_decide,
    examples_bulk_apply,
    review_settings_update,
)
from .selectors import (
    dataset_in_project,
    dataset_version_in_project,
    datasets_of,
    example_in_project,
    export_content_type,
    export_filename,
    import_batch_in_project,
    label_tally,
    status_counts,
    version_compared_with,
    version_diff,
    version_export_check,
    version_export_lines,
)
from .services import (
    DEFAULT_VALIDATION_FRACTION,
    approved_label_counts,
    assistant_answer,
    dataset_contract_set,
    dataset_create,
    dataset_quality_target_set,
    dataset_version_freeze,
    example_move_to_training,
)
from .test_sets import overlapping_test_sets, overlaps_check

JSONL_CONTENT_TYPE = "application/jsonl"
MAX_SEED = 2**31 - 1  # the seed column is a 32-bit integer


def _datasets_with_counts(project: Project) -> QuerySet[Dataset]:
    """One query for the list, rather than one status count query per dataset.

    A join does not go through Example's manager, so the rows of an unfinished import (hidden
    by it) are left out here by name.
    """
    published = Q(examples__import_pending=False)
    per_status = {
        f"{status_value}_count": Count(
            "examples", filter=published & Q(examples__status=status_value)
        )
        for status_value in ExampleStatus.values
    }
    return datasets_of(project).annotate(
        example_count=Count("examples", filter=published), **per_status
    )


class DatasetOutput(serializers.Serializer[Any]):
    """Shared by the list and the create response, so both describe a dataset the same way."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    answer_contract = serializers.JSONField(
        help_text="What a right answer looks like: {} (none), a label set, a JSON Schema or a "
        "regular expression."
    )
    quality_target = serializers.FloatField(
        allow_null=True,
        help_text="The score a model must reach to be good enough (set at quality-target/).",
    )
    created_at = serializers.DateTimeField()


class DatasetCollectionApi(APIView):
    class DatasetListOutput(DatasetOutput):
        example_count = serializers.IntegerField()
        pending_count = serializers.IntegerField()
        approved_count = serializers.IntegerField()
        rejected_count = serializers.IntegerField()

    class DatasetCreateInput(InputSerializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="datasets_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("DatasetPage", DatasetListOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        datasets = _datasets_with_counts(project)
        return paginated_response(
            request=request, view=self, queryset=datasets, serializer_class=self.DatasetListOutput
        )

    @extend_schema(
        operation_id="datasets_create", request=DatasetCreateInput, responses={201: DatasetOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.IMPORT_EXAMPLES
        )
        payload = self.DatasetCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = dataset_create(project=project, **payload.validated_data)
        return Response(DatasetOutput(dataset).data, status=status.HTTP_201_CREATED)


class LabelCountOutput(serializers.Serializer[Any]):
    # Shadows Field.label only for the type checker; DRF moves declared fields off the class.
    label = serializers.CharField()  # type: ignore[assignment]
    approved = serializers.IntegerField()
    pending = serializers.IntegerField()


class LabelTallyOutput(serializers.Serializer[Any]):
    labels = LabelCountOutput(many=True, help_text="Every label, fewest approved first.")
    outside_approved = serializers.IntegerField(help_text="Approved answers that are no label.")
    outside_pending = serializers.IntegerField()
    thin = serializers.ListField(
        child=serializers.CharField(), help_text="Labels under the threshold of approved examples."
    )
    threshold = serializers.IntegerField()


class DatasetDetailApi(APIView):
    class DatasetDetailOutput(DatasetOutput):
        status_counts = serializers.DictField(child=serializers.IntegerField())
        label_tally = LabelTallyOutput(
            allow_null=True,
            help_text="With a label-set contract, the approved and pending examples of each "
            "label; null otherwise.",
        )

    @extend_schema(operation_id="datasets_retrieve", responses=DatasetDetailOutput)
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        dataset = dataset_in_project(project, dataset_id)
        data = {
            **DatasetOutput(dataset).data,
            "status_counts": status_counts(dataset),
            "label_tally": label_tally(dataset, threshold=MIN_TRAINING_EXAMPLES_PER_LABEL),
        }
        return Response(self.DatasetDetailOutput(data).data)


class LineErrorOutput(serializers.Serializer[Any]):
    line = serializers.IntegerField(help_text="1-based; 0 means the whole file.")
    field = serializers.CharField(help_text="Path such as messages[2].role; empty for the line.")
    message = serializers.CharField()


class ImportOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    filename = serializers.CharField()
    format = serializers.CharField(help_text="The format the file was read as.")
    status = serializers.CharField(help_text="queued, running, succeeded or failed.")
    size_bytes = serializers.IntegerField()
    line_count = serializers.IntegerField()
    imported_count = serializers.IntegerField()
    # Shadows Serializer.errors only for the type checker: DRF's metaclass moves declared
    # fields off the class, so the serializer's own .errors still works.
    errors = LineErrorOutput(many=True)  # type: ignore[assignment]
    failure_message = serializers.CharField()
    contract_violations = serializers.JSONField(
        help_text="Imported lines whose answer breaks the answer contract: count and lines."
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class ImportInput(InputSerializer):
        file = serializers.FileField()
        valid_lines_only = serializers.BooleanField(
            default=False,
            help_text="Import the valid lines and report the rest, instead of all-or-nothing.",
        )
        format = serializers.ChoiceField(
            choices=[AUTO, *ALL_FORMATS],
            default=AUTO,
            help_text="auto detects JSONL formats from the first line and CSV from the name.",
        )
        input_column = serializers.CharField(required=False, default="")
        output_column = serializers.CharField(required=False, default="")
        system_column = serializers.CharField(required=False, default="", allow_blank=True)
        system_prompt = serializers.CharField(required=False, default="", allow_blank=True)
        metadata_columns = serializers.ListField(
            child=serializers.CharField(), required=False, default=list
        )
        default_system_prompt = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="Put in front of every example that brings no system message of its own "
            "(for CSV: no system column and no system_prompt). Left out: the project's default "
            "system prompt; empty: none.",
        )

    @extend_schema(
        operation_id="datasets_imports_create",
        summary="Import examples from a JSONL or CSV file (gzip or one-file zip allowed)",
        request={"multipart/form-data": ImportInput},
        responses={
            201: ImportOutput,
            202: OpenApiResponse(
                ImportOutput,
                description="A big, compressed or spreadsheet file: queued for the worker;"
                " follow it at imports/{id}/.",
            ),
            400: OpenApiResponse(
                description="The file had errors; error.errors lists each {line, field, message}."
            ),
        },
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.IMPORT_EXAMPLES
        )
        dataset = dataset_in_project(project, dataset_id)
        payload = self.ImportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        upload = data["file"]
        filename = upload.name or "upload.jsonl"
        mapping = None
        if needs_column_mapping(filename=filename, requested_format=data["format"]):
            mapping = CsvMapping(
                input_column=data["input_column"],
                output_column=data["output_column"],
                system_column=data["system_column"],
                system_prompt=data["system_prompt"],
                metadata_columns=tuple(data["metadata_columns"]),
            )
        import_request = ImportRequest(
            format=data["format"],
            valid_lines_only=data["valid_lines_only"],
            csv_mapping=mapping,
            default_system_prompt=data.get("default_system_prompt"),
        )
        submission = import_submit(
            dataset=dataset, upload=upload, user=acting_user(request), request=import_request
        )
        # The API always sends a spreadsheet's columns with it, so it is never left waiting.
        imported = submission.route is ImportRoute.IMPORTED
        code = status.HTTP_201_CREATED if imported else status.HTTP_202_ACCEPTED
        return Response(ImportOutput(submission.batch).data, status=code)


class ImportDetailApi(APIView):
    class ImportProgressOutput(serializers.Serializer[Any]):
        bytes_read = serializers.IntegerField()
        lines = serializers.IntegerField()
        imported = serializers.IntegerField()
        errors = serializers.IntegerField()  # type: ignore[assignment]
        percent = serializers.IntegerField()
        finished = serializers.BooleanField()

    @extend_schema(
        operation_id="imports_retrieve",
        summary="An import's status, live progress while it runs, and its errors when done",
        responses=ImportOutput,
    )
    def get(self, request: Request, project_id: int, batch_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        batch = import_batch_in_project(project, batch_id)
        progress = self.ImportProgressOutput(import_progress(batch)).data
        return Response({**ImportOutput(batch).data, "progress": progress})


class ExampleOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    status = serializers.CharField()
    messages = serializers.ListField(child=serializers.DictField())
    revision = serializers.IntegerField()
    source_line = serializers.IntegerField(allow_null=True)
    import_batch = serializers.IntegerField(source="import_batch_id", allow_null=True)
    derived_from = serializers.IntegerField(
        source="derived_from_id",
        allow_null=True,
        help_text="The example this one was made from; it follows that one's split while the "
        "origin is held out.",
    )
    origin_kind = serializers.CharField(
        help_text="evaluation_failure, production_feedback or empty."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


ExamplePage = page_serializer("ExamplePage", ExampleOutput)


class ExampleListApi(APIView):
    class ExampleFilter(ListQueryInput):
        status = serializers.ChoiceField(choices=ExampleStatus.choices, required=False)

    @extend_schema(
        operation_id="datasets_examples_list",
        parameters=[ExampleFilter, *PAGINATION_PARAMETERS],
        responses=ExamplePage,
    )
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        dataset = dataset_in_project(project, dataset_id)
        filters = self.ExampleFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        examples = dataset.examples.filter(**filters.validated_data).order_by("id")
        return paginated_response(
            request=request,
            view=self,
            queryset=examples,
            serializer_class=ExampleOutput,
            query=None,
        )


class DecisionOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    reviewer = serializers.CharField(source="reviewer.get_username")
    action = serializers.CharField()
    previous_answer = serializers.CharField()
    new_answer = serializers.CharField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExampleDetailOutput(ExampleOutput):
    """An example with its review history; the review action answers with it too."""

    decisions = DecisionOutput(many=True)
    contract_violation = serializers.SerializerMethodField(
        help_text="Why the current answer breaks the dataset's answer contract; null when it "
        "keeps it or there is none."
    )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_contract_violation(self, example: Example) -> str | None:
        return contract_violation(
            example.dataset.answer_contract, assistant_answer(example.messages)
        )


def _example_with_decisions(example: Example) -> Example:
    return (
        Example.objects.select_related("dataset")
        .prefetch_related("decisions__reviewer")
        .get(pk=example.pk)
    )


class ExampleDetailApi(APIView):
    @extend_schema(operation_id="examples_retrieve", responses=ExampleDetailOutput)
    def get(self, request: Request, project_id: int, example_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        example = example_in_project(project, example_id)
        return Response(ExampleDetailOutput(_example_with_decisions(example)).data)


class ExampleReviewApi(APIView):
    class ReviewInput(InputSerializer):
        action = serializers.ChoiceField(choices=ReviewAction.choices)
        answer = serializers.CharField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="The corrected assistant answer; required when action is 'edit'.",
        )
        comment = serializers.CharField(required=False, allow_blank=True, default="")
        revision = serializers.IntegerField(
            min_value=0,
            help_text="Required: the example revision the decision was made on (the example's "
            "`revision` as you read it); a stale one gets 409 and nothing is overwritten.",
        )
        contract_confirmed = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Approve even though the answer breaks the dataset's answer contract "
            "(without it such an approval gets 409).",
        )

    @extend_schema(
        operation_id="examples_review",
        summary="Approve, reject, edit or reopen an example",
        request=ReviewInput,
        responses=ExampleDetailOutput,
    )
    def post(self, request: Request, project_id: int, example_id: int) -> Response:
        project, role = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
        example = example_in_project(project, example_id)
        if example.status == ExampleStatus.DISPUTED:
            project_for(user=request.user, project_id=project_id, action=Action.ADJUDICATE)
        payload = self.ReviewInput(data=request.data)
        payload.is_valid(raise_exception=True)
        # Under overlap a pending example takes this as one vote; see review/services.py.
        outcome = example_decide(
            example=example,
            user=acting_user(request),
            action=ReviewAction(payload.validated_data["action"]),
            new_answer=payload.validated_data.get("answer"),
            comment=payload.validated_data["comment"],
            expected_revision=payload.validated_data["revision"],
            may_adjudicate=role_allows(role, Action.ADJUDICATE),
            contract_confirmed=payload.validated_data["contract_confirmed"],
        )
        return Response(ExampleDetailOutput(_example_with_decisions(outcome.example)).data)


class VersionOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    dataset_name = serializers.CharField(source="dataset.name")
    number = serializers.IntegerField()
    content_hash = serializers.CharField()
    seed = serializers.IntegerField()
    validation_fraction = serializers.FloatField()
    example_count = serializers.IntegerField()
    train_count = serializers.IntegerField()
    validation_count = serializers.IntegerField()
    note = serializers.CharField()
    split_carried_from = serializers.IntegerField(source="split_carried_from_id", allow_null=True)
    retired_from_validation = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Held-out examples this freeze moved out of validation, because a copy "
        "derived from each was moved to training.",
    )
    overlap_override_reason = serializers.CharField(
        help_text="Why train/validation pairs sharing an input were frozen anyway; empty if none."
    )
    overlap_count = serializers.IntegerField()
    overlap_pairs = serializers.ListField(child=serializers.DictField())
    answer_contract = serializers.JSONField(help_text="The contract the version was frozen under.")
    contract_override = serializers.JSONField(
        help_text="When approved examples broke the contract: the lead's reason and the examples."
    )
    per_label = serializers.JSONField(
        source="readiness.per_label",
        allow_null=True,
        help_text="Under a label-set contract, the split per label as frozen: each label's "
        "train and validation counts, the labels with a single example (kept in training), "
        "those without a validation or training example, and those under the readiness "
        "threshold of training examples (see the readiness report). Null otherwise.",
    )
    is_test_set = serializers.BooleanField(
        help_text="A held-out test set: never split (every item is a test item), refused as "
        "training data, evaluated whole."
    )
    test_overlaps = serializers.JSONField(
        help_text="A test set's inputs shared with each training version of the project, as "
        'last checked: {"checked_at": ..., "versions": [{"version": id, "exact": n, "near": n, '
        '"test_items": n, "pair_count": n, "pairs": [...]}]} (the first 200 pairs listed per '
        "version); {} for a training version."
    )
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()


class OverlappingTestSetOutput(serializers.Serializer[Any]):
    test_set = serializers.IntegerField(source="test_set.pk")
    test_set_name = serializers.CharField(source="test_set.__str__")
    exact = serializers.IntegerField()
    near = serializers.IntegerField()
    test_items = serializers.IntegerField(help_text="Test items sharing an input with it.")


class VersionDetailOutput(VersionOutput):
    overlapping_test_sets = serializers.SerializerMethodField(
        help_text="For a training version: the project's test sets that share inputs with it."
    )

    @extend_schema_field(OverlappingTestSetOutput(many=True))
    def get_overlapping_test_sets(self, version: DatasetVersion) -> list[dict[str, Any]]:
        if version.is_test_set:
            return []
        return list(OverlappingTestSetOutput(overlapping_test_sets(version), many=True).data)


class DatasetVersionCollectionApi(APIView):
    class FreezeInput(InputSerializer):
        seed = serializers.IntegerField(required=False, default=42, min_value=0, max_value=MAX_SEED)
        # Bounds are the service's to enforce, so its message is the one the caller sees.
        validation_fraction = serializers.FloatField(
            required=False, default=DEFAULT_VALIDATION_FRACTION
        )
        note = serializers.CharField(required=False, allow_blank=True, default="")
        resplit = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Draw a new split instead of keeping each example's side from the last "
            "version.",
        )
        overlap_override_reason = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=1000,
            help_text="Freeze even though train and validation share inputs (a 400 lists the "
            "pairs); the reason and the pairs are recorded on the version.",
        )
        contract_override_reason = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            help_text="Freeze even though approved examples break the answer contract, and why "
            "(recorded on the version).",
        )
        test_set = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Freeze as a held-out test set: not split (validation_fraction, resplit "
            "and overlap_override_reason do not apply), never trained on, evaluated whole; "
            "its overlap with every training version of the project is checked and stored.",
        )

    @extend_schema(
        operation_id="datasets_versions_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("VersionPage", VersionOutput),
    )
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        dataset = dataset_in_project(project, dataset_id)
        versions = dataset.versions.select_related("dataset", "created_by").order_by("-number")
        return paginated_response(
            request=request, view=self, queryset=versions, serializer_class=VersionOutput
        )

    @extend_schema(
        operation_id="datasets_versions_freeze",
        summary="Freeze the approved examples into a new immutable version",
        request=FreezeInput,
        # The detail: a new training version may already share inputs with a test set.
        responses={201: VersionDetailOutput},
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.FREEZE)
        dataset = dataset_in_project(project, dataset_id)
        payload = self.FreezeInput(data=request.data)
        payload.is_valid(raise_exception=True)
        version = dataset_version_freeze(
            dataset=dataset, user=acting_user(request), **payload.validated_data
        )
        return Response(VersionDetailOutput(version).data, status=status.HTTP_201_CREATED)


class MoveToTrainingApi(APIView):
    class MoveInput(InputSerializer):
        reason = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=1000
        )

    class MoveOutput(serializers.Serializer[Any]):
        example = serializers.IntegerField(source="retirement.derived_id")
        origin = serializers.IntegerField(source="retirement.origin_id")
        reason = serializers.CharField(source="retirement.reason")
        retired_by = serializers.CharField(source="retirement.retired_by.get_username")
        created_at = serializers.DateTimeField(source="retirement.created_at")
        validation_before = serializers.IntegerField(source="shrink.before")
        validation_after = serializers.IntegerField(source="shrink.after")
        warning = serializers.CharField(source="shrink.warning")

    @extend_schema(
        operation_id="examples_move_to_training",
        summary="Train on a derived example: it and its origin go to training from the next "
        "freeze, and the evaluation set shrinks (the answer says by how much)",
        request=MoveInput,
        responses={201: MoveOutput},
    )
    def post(self, request: Request, project_id: int, example_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.FREEZE)
        example = example_in_project(project, example_id)
        payload = self.MoveInput(data=request.data)
        payload.is_valid(raise_exception=True)
        retirement, shrink = example_move_to_training(
            example=example, user=acting_user(request), reason=payload.validated_data["reason"]
        )
        body = self.MoveOutput({"retirement": retirement, "shrink": shrink}).data
        return Response(body, status=status.HTTP_201_CREATED)


class DatasetVersionDetailApi(APIView):
    @extend_schema(operation_id="dataset_versions_retrieve", responses=VersionDetailOutput)
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(VersionDetailOutput(dataset_version_in_project(project, version_id)).data)


class TestOverlapsCheckApi(APIView):
    @extend_schema(
        operation_id="dataset_versions_test_overlaps_check",
        summary="Check a test set against every training version of the project again",
        request=None,
        responses=VersionDetailOutput,
    )
    def post(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.FREEZE)
        version = dataset_version_in_project(project, version_id)
        refuse_any_input(request)
        return Response(VersionDetailOutput(overlaps_check(test_set=version)).data)


class VersionDiffApi(APIView):
    class DiffItemOutput(serializers.Serializer[Any]):
        example = serializers.IntegerField(source="example_id", allow_null=True)
        split = serializers.CharField()
        messages = serializers.JSONField()

    class ChangedOutput(serializers.Serializer[Any]):
        before = serializers.JSONField(source="before.messages")
        after = serializers.JSONField(source="after.messages")
        example = serializers.IntegerField(source="after.example_id", allow_null=True)

    class VersionDiffOutput(serializers.Serializer[Any]):
        older = serializers.IntegerField(source="older.pk")
        newer = serializers.IntegerField(source="newer.pk")
        summary = serializers.CharField()
        unchanged = serializers.IntegerField()

    class DiffQuery(InputSerializer):
        against = IdField(required=False, help_text="Id of the version to compare with.")

    @extend_schema(
        operation_id="dataset_versions_diff",
        summary="Examples added, removed and changed since another version (default: previous)",
        parameters=[DiffQuery],
        responses=VersionDiffOutput,
    )
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        newer = dataset_version_in_project(project, version_id)
        query = self.DiffQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        against = query.validated_data.get("against")
        diff = version_diff(version_compared_with(newer, against), newer)
        return Response(
            {
                **self.VersionDiffOutput(diff).data,
                "added": self.DiffItemOutput(diff.added, many=True).data,
                "removed": self.DiffItemOutput(diff.removed, many=True).data,
                "changed": self.ChangedOutput(diff.changed, many=True).data,
            }
        )


class JsonlRenderer(renderers.BaseRenderer):
    """Lets clients ask for ``Accept: application/jsonl``; errors still come out as JSON."""

    media_type = JSONL_CONTENT_TYPE
    format = "jsonl"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        return (json.dumps(data, ensure_ascii=False) + "\n").encode()


class _QueryFormatIsOurs:
    """DRF reads ``?format=`` as a renderer override; on the export it names the file format."""

    URL_FORMAT_OVERRIDE = None


class ExportNegotiation(DefaultContentNegotiation):
    settings = _QueryFormatIsOurs()  # type: ignore[assignment]


class DatasetVersionExportApi(APIView):
    renderer_classes = [renderers.JSONRenderer, JsonlRenderer]
    content_negotiation_class = ExportNegotiation

    class ExportFilter(InputSerializer):
        split = serializers.ChoiceField(
            choices=Split.choices,
            required=False,
            help_text="Only this split; both when left out.",
        )
        format = serializers.ChoiceField(
            choices=list(EXPORT_FORMATS),
            required=False,
            default=OPENAI_CHAT,
            help_text="openai_chat (default), anthropic (system at the top level, no weights), "
            "prompt_completion (single-turn only) or csv (input, ideal_output, system, split).",
        )

    @extend_schema(
        operation_id="dataset_versions_export",
        summary="Download the version in a provider's format (default: OpenAI chat JSONL)",
        parameters=[ExportFilter],
        responses={
            (200, JSONL_CONTENT_TYPE): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
        },
    )
    def get(
        self, request: Request, project_id: int, version_id: int
    ) -> StreamingHttpResponse | Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        version = dataset_version_in_project(project, version_id)
        filters = self.ExportFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        split = filters.validated_data.get("split")
        fmt = filters.validated_data["format"]
        version_export_check(version, split=split, fmt=fmt)
        # Streamed so a large version is never held in memory as one string.
        response = StreamingHttpResponse(
            version_export_lines(version, split=split, fmt=fmt),
            content_type=export_content_type(fmt),
        )
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=export_filename(version, split=split, fmt=fmt)
        )
        return response


# --- review workflow --------------------------------------------------------------------------


class QueueFilterInput(InputSerializer):
    """The review queue's filter, as in the page's URL."""

    status = serializers.ChoiceField(choices=STATUS_CHOICES, required=False, default="pending")
    finding = serializers.CharField(required=False, allow_blank=True, default="")
    q = serializers.CharField(required=False, allow_blank=True, default="")
    meta = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="key=value on the metadata"
    )
    tag = serializers.CharField(required=False, allow_blank=True, default="")
    assignee = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="any, me, unassigned or a username; default: me if you have assignments.",
    )


def _queue_filter(
    data: Any,
    *,
    dataset: Dataset,
    user: User,
    input_class: type[QueueFilterInput] = QueueFilterInput,
) -> QueueFilter:
    filters = input_class(data=data)
    filters.is_valid(raise_exception=True)
    return QueueFilter.from_query(
        filters.validated_data, default_assignee=default_assignee(dataset, user)
    )


def _check_disputed_role(
    request: Request, project: Project, filters: QueueFilter, *, action: Action
) -> None:
    """The disputed queue shows every vote: reading it needs READ_VOTES, deciding ADJUDICATE."""
    if filters.status == ExampleStatus.DISPUTED:
        project_for(user=request.user, project_id=project.pk, action=action)


class ReviewQueueApi(APIView):
    class QueueInput(QueueFilterInput):
        after = serializers.IntegerField(required=False, default=0, min_value=0)

    class QueueOutput(serializers.Serializer[Any]):
        counts = serializers.DictField(child=serializers.IntegerField())
        matching = serializers.IntegerField()
        next = ExampleDetailOutput(allow_null=True)

    @extend_schema(
        operation_id="datasets_review_queue",
        summary="The next example in the filtered review queue, and the counts",
        parameters=[QueueInput],
        responses=QueueOutput,
    )
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        # Read-only: managers read the queue too; deciding goes through examples/<id>/review/.
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        dataset = dataset_in_project(project, dataset_id)
        user = acting_user(request)
        filters = _queue_filter(
            request.query_params, dataset=dataset, user=user, input_class=self.QueueInput
        )
        _check_disputed_role(request, project, filters, action=Action.READ_VOTES)
        after = self.QueueInput(data=request.query_params)
        after.is_valid(raise_exception=True)
        examples = queue_examples(dataset, filters, user=user)
        example = next_in_queue(examples, after_id=after.validated_data["after"])
        data = {
            "counts": queue_counts(dataset, filters, user=user),
            "matching": examples.count(),
            "next": _example_with_decisions(example) if example else None,
        }
        return Response(self.QueueOutput(data).data)


class ReviewBulkApi(APIView):
    class BulkInput(InputSerializer):
        action = serializers.ChoiceField(choices=list(BULK_ACTIONS))
        filter = QueueFilterInput(required=False, default=dict)
        tag = serializers.CharField(required=False, allow_blank=True, default="")
        reviewers = serializers.ListField(
            child=serializers.CharField(), required=False, default=list, help_text="usernames"
        )
        selection_token = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            help_text="From a dry run: refused with 409 if the selection changed since.",
        )
        dry_run = serializers.BooleanField(required=False, default=False)
        expected_count = serializers.IntegerField(
            required=False,
            min_value=0,
            help_text="Required unless dry_run: how many examples you confirm acting on (the "
            "count a dry run answers, as the page's confirmation shows it). A missing or "
            "different count is refused with 400 and the real count; nothing changes.",
        )

    class BulkOutput(serializers.Serializer[Any]):
        count = serializers.IntegerField(help_text="Examples in the selection.")
        selection_token = serializers.CharField()
        refused = serializers.ListField(child=serializers.IntegerField())
        changed = serializers.IntegerField(help_text="Decisions, tags or assignments made.")

    @extend_schema(
        operation_id="datasets_review_bulk",
        summary="Approve, reject, tag or assign every example matching a filter, all or nothing "
        "(ML leads and admins)",
        request=BulkInput,
        responses=BulkOutput,
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
        dataset = dataset_in_project(project, dataset_id)
        payload = self.BulkInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        action = BulkAction(data["action"])
        project_for(user=request.user, project_id=project_id, action=action.permission(dataset))
        user = acting_user(request)
        filters = _queue_filter(data["filter"], dataset=dataset, user=user)
        _check_disputed_role(request, project, filters, action=Action.ADJUDICATE)
        examples = filtered_examples(dataset, filters, user=user)
        names = data["reviewers"]
        reviewers = bulk_reviewers(project, names) if action is BulkAction.ASSIGN else []
        selection = selection_preview(examples, refused_statuses=action.refused_statuses())
        changed = 0
        if not data["dry_run"]:
            _confirm_count(action, expected=data.get("expected_count"), actual=selection.count)
            changed = examples_bulk_apply(
                action=action,
                dataset=dataset,
                examples=examples,
                user=user,
                tag_name=data["tag"],
                reviewers=reviewers,
                expected_token=data["selection_token"] or None,
            )
        output = {
            "count": selection.count,
            "selection_token": selection.token,
            "refused": [pk for pk, _ in selection.refused],
            "changed": changed,
        }
        return Response(self.BulkOutput(output).data)


def _confirm_count(action: str, *, expected: int | None, actual: int) -> None:
    """The API's form of the page's confirmation: the caller states the count it acts on."""
    if expected == actual:
        return
    said = "no expected_count" if expected is None else f"expected_count {expected}"
    raise ApplicationError(
        f"expected_count: this {action} would affect {actual} example(s) and the request "
        f"gave {said}; send expected_count={actual} to confirm. Nothing was changed.",
        extra={"field": "expected_count", "count": actual},
    )


class ReviewSettingsOutput(serializers.Serializer[Any]):
    review_overlap = serializers.IntegerField()
    guidelines = serializers.CharField()


class ReviewSettingsApi(APIView):
    class SettingsInput(InputSerializer):
        review_overlap = serializers.IntegerField()
        guidelines = serializers.CharField(allow_blank=True, trim_whitespace=False)

    @extend_schema(operation_id="datasets_review_settings", responses=ReviewSettingsOutput)
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(ReviewSettingsOutput(dataset_in_project(project, dataset_id)).data)

    @extend_schema(
        operation_id="datasets_review_settings_update",
        request=SettingsInput,
        responses=ReviewSettingsOutput,
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.ASSIGN)
        dataset = dataset_in_project(project, dataset_id)
        payload = self.SettingsInput(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = review_settings_update(dataset=dataset, **payload.validated_data)
        return Response(ReviewSettingsOutput(dataset).data)


class ContractOutput(serializers.Serializer[Any]):
    answer_contract = serializers.JSONField()
    description = serializers.CharField()


def _contract_output(dataset: Dataset) -> dict[str, Any]:
    return {
        "answer_contract": dataset.answer_contract,
        "description": describe_contract(dataset.answer_contract),
    }


class DatasetContractApi(APIView):
    class ContractInput(InputSerializer):
        answer_contract = serializers.JSONField(
            help_text='{} for none; {"kind": "label_set", "labels": [...]}, '
            '{"kind": "json_schema", "schema": {...}} or {"kind": "regex", "pattern": "..."}.'
        )

    @extend_schema(operation_id="datasets_contract", responses=ContractOutput)
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(
            ContractOutput(_contract_output(dataset_in_project(project, dataset_id))).data
        )

    @extend_schema(
        operation_id="datasets_contract_update", request=ContractInput, responses=ContractOutput
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.SET_CONTRACT
        )
        dataset = dataset_in_project(project, dataset_id)
        payload = self.ContractInput(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = dataset_contract_set(
            dataset=dataset, contract=payload.validated_data["answer_contract"]
        )
        return Response(ContractOutput(_contract_output(dataset)).data)


class QualityTargetOutput(serializers.Serializer[Any]):
    quality_target = serializers.FloatField(
        allow_null=True,
        help_text="The score (above 0, at most 1) a model must reach on the metric an "
        "evaluation decides on to be good enough for this task; null: no target.",
    )


class ScoreInputField(serializers.FloatField):
    """A JSON number; true and false are refused, although Python would read them as 1 and 0
    (``{"quality_target": true}`` must not set a target of 100 %)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class DatasetQualityTargetApi(APIView):
    class QualityTargetInput(InputSerializer):
        # Any number gets through, so the range is the service's to refuse, in its words.
        quality_target = ScoreInputField(
            allow_null=True, help_text="Above 0 and at most 1 (0.8 for 80 %); null clears it."
        )

    @extend_schema(operation_id="datasets_quality_target", responses=QualityTargetOutput)
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(QualityTargetOutput(dataset_in_project(project, dataset_id)).data)

    @extend_schema(
        operation_id="datasets_quality_target_update",
        summary="Set or clear the score a model must reach to be good enough (the advisor's)",
        request=QualityTargetInput,
        responses=QualityTargetOutput,
    )
    def post(self, request: Request, project_id: int, dataset_id: int) -> Response:
        # Set by whoever sets the answer contract: both say what a good answer is.
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.SET_CONTRACT
        )
        dataset = dataset_in_project(project, dataset_id)
        payload = self.QualityTargetInput(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = dataset_quality_target_set(
            dataset=dataset, quality_target=payload.validated_data["quality_target"]
        )
        return Response(QualityTargetOutput(dataset).data)


class DerivedLabelsApi(APIView):
    class DerivedLabelsOutput(serializers.Serializer[Any]):
        answer_contract = serializers.JSONField()
        labels = serializers.ListField(
            child=serializers.DictField(), help_text="Each label with its approved count."
        )

    @extend_schema(
        operation_id="datasets_contract_derived_labels",
        summary="A label set derived from the approved answers, with counts (nothing is saved)",
        responses=DerivedLabelsOutput,
    )
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.SET_CONTRACT
        )
        contract, counts = approved_label_counts(dataset=dataset_in_project(project, dataset_id))
        data = {
            "answer_contract": contract,
            "labels": [{"label": label, "count": count} for label, count in counts],
        }
        return Response(self.DerivedLabelsOutput(data).data)


class AgreementApi(APIView):
    class AgreementOutput(serializers.Serializer[Any]):
        raters_per_item = serializers.IntegerField()
        items = serializers.IntegerField(help_text="Examples with complete votes.")
        percent = serializers.FloatField(allow_null=True, help_text="Share of unanimous items.")
        kappa = serializers.FloatField(allow_null=True)
        kappa_name = serializers.CharField()
        disputed = serializers.IntegerField()

    @extend_schema(operation_id="datasets_review_agreement", responses=AgreementOutput)
    def get(self, request: Request, project_id: int, dataset_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        summary = agreement_summary(dataset_in_project(project, dataset_id))
        return Response(self.AgreementOutput(summary).data)


class CommentOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    author = serializers.CharField(source="author.get_username")
    body = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExampleCommentsApi(APIView):
    class CommentInput(InputSerializer):
        body = serializers.CharField(allow_blank=True, trim_whitespace=False)

    @extend_schema(
        operation_id="examples_comments_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("CommentPage", CommentOutput),
    )
    def get(self, request: Request, project_id: int, example_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        example = example_in_project(project, example_id)
        comments = example.comments.select_related("author").order_by("id")
        return paginated_response(
            request=request, view=self, queryset=comments, serializer_class=CommentOutput
        )

    @extend_schema(
        operation_id="examples_comments_create",
        request=CommentInput,
        responses={201: CommentOutput},
    )
    def post(self, request: Request, project_id: int, example_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.REVIEW)
        example = example_in_project(project, example_id)
        payload = self.CommentInput(data=request.data)
        payload.is_valid(raise_exception=True)
        comment = example_comment_add(
            example=example, user=acting_user(request), body=payload.validated_data["body"]
        )
        return Response(CommentOutput(comment).data, status=status.HTTP_201_CREATED)


class ExampleVotesApi(APIView):
    class VoteOutput(serializers.Serializer[Any]):
        reviewer = serializers.CharField(source="reviewer.get_username")
        verdict = serializers.CharField()
        answer = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="examples_votes_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("VotePage", VoteOutput),
    )
    def get(self, request: Request, project_id: int, example_id: int) -> Response:
        # Reviewers vote without seeing each other's votes; adjudicators and readers see them.
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.READ_VOTES)
        example = example_in_project(project, example_id)
        votes = example.votes.select_related("reviewer").order_by("id")
        return paginated_response(
            request=request, view=self, queryset=votes, serializer_class=self.VoteOutput
        )
