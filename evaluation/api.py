"""API for evaluation: queue runs with any mix of candidates, sweep a job's checkpoints, read
reports and per-item results, tag failures and send them back to review, and ask the advisor
whether to fine-tune or prompt."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Mapping
from dataclasses import fields
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from django.db.models import Model
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import BaseModel, Endpoint
from catalog.selectors import base_model_by_key, endpoint_named
from datasets.models import DatasetVersion
from datasets.selectors import dataset_versions_of
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
from ftportal.idempotency import (
    IDEMPOTENCY_KEY_PARAMETER,
    idempotency_key_of,
    once_per_key,
    request_fingerprint,
)
from ftportal.models import Project
from ftportal.permissions import project_for
from ftportal.roles import Action
from registry.models import ModelVersion
from registry.selectors import model_versions_of
from training.models import Checkpoint
from training.selectors import checkpoints_of, training_job_in_project

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
from .judge import DEFAULT_JUDGE_MAX_NEW_TOKENS
from .models import CandidateKind, EvalResult, EvalRun, EvalSplit, Prompting
from .runner import progress
from .scoring import METRICS
from .selectors import (
    OUTCOMES,
    RESULT_ORDERS,
    ResultFilter,
    eval_result_in_run,
    eval_run_in_project,
    eval_runs_of,
    filtered_results,
)
from .services import (
    JUDGE_KINDS,
    CandidateSpec,
    JudgeSpec,
    checkpoint_sweep_create,
    eval_result_tag,
    eval_results_send_to_review,
    eval_run_cancel,
    eval_run_create,
    eval_run_for_version,
    eval_run_resume,
)


def _not_here(field: str, what: str, pk: object) -> serializers.ValidationError:
    # Same message whether the id exists elsewhere or not, so other projects do not leak.
    return serializers.ValidationError({field: [f"No {what} {pk} in this project."]})


def _model_version(project: Project, pk: int, field: str) -> ModelVersion:
    """A body reference is bad input (400 naming the field), not a missing URL (404)."""
    version = model_versions_of(project).filter(pk=pk).first()
    if version is None:
        raise _not_here(field, "model version", pk)
    return version


def _dataset_version(project: Project, pk: int, field: str) -> DatasetVersion:
    version = dataset_versions_of(project).filter(pk=pk).first()
    if version is None:
        raise _not_here(field, "dataset version", pk)
    return version


def _checkpoint(project: Project, pk: int, field: str) -> Checkpoint:
    checkpoint = checkpoints_of(project).filter(pk=pk).first()
    if checkpoint is None:
        raise _not_here(field, "checkpoint", pk)
    return checkpoint


def _base_model(key: str, field: str) -> BaseModel:
    base = base_model_by_key(key)
    if base is None:
        raise serializers.ValidationError({field: [f"No base model {key!r} in the catalog."]})
    return base


def _endpoint(name: str, field: str) -> Endpoint:
    endpoint = endpoint_named(name)
    if endpoint is None:
        raise serializers.ValidationError(
            {field: [f"No endpoint {name!r}; GET /api/projects/<id>/endpoints/ lists them."]}
        )
    return endpoint


class _NamesNoSecret(InputSerializer):
    """Refuses the fields that once let a user choose a URL or a worker variable, with what to
    send instead (the strict base would only say they are unknown)."""

    retired_fields: ClassVar[tuple[str, ...]] = ()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            retired = [key for key in self.retired_fields if key in data]
            if retired:
                raise serializers.ValidationError(
                    {
                        key: [
                            f"'{key}' is no longer accepted: a user never names a URL or a key "
                            "variable. Name a registered endpoint in 'endpoint' (admins "
                            "register them; GET /api/projects/<id>/endpoints/ lists them)."
                        ]
                        for key in retired
                    }
                )
        return super().to_internal_value(data)


ENDPOINT_HELP = "Hosted kinds: the name of an admin-registered endpoint serving the model."


class CandidateInput(_NamesNoSecret):
    retired_fields = ("api_base_url", "api_key_env")

    kind = serializers.ChoiceField(choices=CandidateKind.choices)
    model_version = serializers.IntegerField(required=False)
    checkpoint = serializers.IntegerField(required=False)
    base_model = serializers.CharField(required=False, help_text="A catalog key.")
    api_model = serializers.CharField(required=False, allow_blank=True, default="")
    endpoint = serializers.CharField(required=False, help_text=ENDPOINT_HELP)
    prompting = serializers.ChoiceField(choices=Prompting.choices, default=Prompting.ZERO_SHOT)
    few_shot_k = serializers.IntegerField(required=False, default=0, min_value=0)
    few_shot_seed = serializers.IntegerField(required=False, default=0)
    shots_version = serializers.IntegerField(required=False)
    system_prompt = serializers.CharField(required=False, allow_blank=True, default="")
    user_template = serializers.CharField(required=False, default="{input}")
    input_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, required=False
    )
    output_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, required=False
    )
    # Shadows Field.label only for the type checker; DRF moves declared fields off the class.
    label = serializers.CharField(required=False, allow_blank=True, default="")  # type: ignore[assignment]
    constrained = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Local models only: constrain decoding to the evaluated version's answer "
        "contract (label set, JSON Schema or regular expression).",
    )
    label_scoring = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Local models only, with a label-set contract: answer by ranking every label "
        "by the model's likelihood of it instead of generating; each answer gets a confidence.",
    )
    abstain_below = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        help_text="With label_scoring: answers whose confidence is below this (0 to 1) abstain "
        "and are reported apart.",
    )


def candidate_spec(project: Project, data: dict[str, Any], field: str) -> CandidateSpec:
    """Resolve a candidate's references in this project; errors name ``field``."""
    return CandidateSpec(
        kind=CandidateKind(data["kind"]),
        model_version=_model_version(project, data["model_version"], f"{field}.model_version")
        if "model_version" in data
        else None,
        checkpoint=_checkpoint(project, data["checkpoint"], f"{field}.checkpoint")
        if "checkpoint" in data
        else None,
        base_model=_base_model(data["base_model"], f"{field}.base_model")
        if "base_model" in data
        else None,
        api_model=data["api_model"],
        endpoint=_endpoint(data["endpoint"], f"{field}.endpoint") if "endpoint" in data else None,
        prompting=Prompting(data["prompting"]),
        few_shot_k=data["few_shot_k"],
        few_shot_seed=data["few_shot_seed"],
        shots_version=_dataset_version(project, data["shots_version"], f"{field}.shots_version")
        if "shots_version" in data
        else None,
        system_prompt=data["system_prompt"],
        user_template=data["user_template"],
        input_usd_per_million_tokens=data.get("input_usd_per_million_tokens"),
        output_usd_per_million_tokens=data.get("output_usd_per_million_tokens"),
        label=data["label"],
        constrained=data["constrained"],
        label_scoring=data["label_scoring"],
        abstain_below=data["abstain_below"],
    )


class JudgeInput(_NamesNoSecret):
    retired_fields = ("base_url", "key_env")

    kind = serializers.ChoiceField(
        choices=[(k.value, k.label) for k in JUDGE_KINDS],
        help_text="base: a local catalog model (model is its key); or a hosted API.",
    )
    model = serializers.CharField()
    endpoint = serializers.CharField(required=False, help_text=ENDPOINT_HELP)
    rubric = serializers.CharField(required=False, allow_blank=True, default="")
    max_new_tokens = serializers.IntegerField(required=False, default=DEFAULT_JUDGE_MAX_NEW_TOKENS)
    input_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, required=False
    )
    output_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, required=False
    )


METRICS_HELP = (
    "The candidate's summary once it has answered: examples, failed, means (each per-item "
    "score), latency, tokens and cost. Label metrics in 'labels' whenever the run's answer "
    "contract is a label set (whatever the number or length of its labels), or without one "
    "when the expected answers look like labels: source ('contract' or 'expected_answers'), "
    "accuracy, macro_f1 (the mean per-label F1 over the labels expected or answered; "
    "averaged_over says how many), invalid and invalid_rate (answers that are none of the "
    "labels, the contract's check deciding), per_label (label, precision, recall, f1, support, "
    "answered; precision null when nothing was answered with the label, recall null when no "
    "item expected it), confusion (labels; matrix, rows expected and columns answered, with a "
    "last column named by invalid_column for the invalid answers), and with a contract "
    "labels_in_contract and expected_outside_contract. When label metrics are left out, "
    "'labels_left_out' gives the reason. When the answers carry confidences (label scoring): "
    "'abstention' (threshold, the candidate's abstain_below; answered, abstained, "
    "accuracy_answered, items) and 'calibration' (expected_calibration_error over 10 equal "
    "confidence bins; bins with low, high, count, confidence and accuracy)."
)


class CandidateOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    label = serializers.CharField()  # type: ignore[assignment]
    kind = serializers.CharField()
    base_model = serializers.CharField(source="base_model.key", allow_null=True, default=None)
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
    checkpoint = serializers.IntegerField(source="checkpoint_id", allow_null=True)
    api_model = serializers.CharField()
    endpoint = serializers.CharField(source="endpoint.name", allow_null=True, default=None)
    prompting = serializers.CharField()
    few_shot_k = serializers.IntegerField()
    few_shot_seed = serializers.IntegerField()
    constrained = serializers.BooleanField()
    label_scoring = serializers.BooleanField()
    abstain_below = serializers.FloatField(allow_null=True)
    input_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, allow_null=True
    )
    output_usd_per_million_tokens = serializers.DecimalField(
        max_digits=10, decimal_places=4, allow_null=True
    )
    metrics = serializers.JSONField(help_text=METRICS_HELP)
    example_count = serializers.IntegerField()
    failed_count = serializers.IntegerField()
    generation_seconds = serializers.FloatField(allow_null=True)
    prompt_record = serializers.JSONField(
        help_text="What the candidate was sent, recorded when it started answering (empty "
        "before): prompting; system_prompt (source candidate with its text, items with the "
        "items' own texts kept, or none); user_template; shots, the few-shot examples drawn, "
        "each with its position in shots_version's training split and its turns as sent; "
        "shots_version {id, name}; first_item, the first item it answered with its prompt as "
        "sent; recorded_at."
    )


class EvalRunOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    kind = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    dataset_version_number = serializers.IntegerField(source="dataset_version.number")
    dataset_name = serializers.CharField(source="dataset_version.dataset.name")
    split = serializers.CharField()
    training_job = serializers.IntegerField(source="training_job_id", allow_null=True)
    max_new_tokens = serializers.IntegerField()
    primary_metric = serializers.CharField()
    regex_check = serializers.CharField()
    contains_check = serializers.CharField()
    judge_kind = serializers.CharField(help_text="Empty when the run has no judge.")
    judge_model = serializers.CharField()
    judge_endpoint = serializers.CharField(
        source="judge_endpoint.name", allow_null=True, default=None
    )
    judge_max_new_tokens = serializers.IntegerField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    progress = serializers.SerializerMethodField()
    worker_silent_seconds = serializers.IntegerField(
        allow_null=True,
        help_text="Seconds since the worker of this running evaluation was last heard from, "
        "once that is longer than its heartbeat allows; null while on time.",
    )
    created_by = serializers.CharField(source="created_by.get_username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    candidates = CandidateOutput(many=True)
    report = serializers.JSONField(
        help_text=(
            "When finished: metrics, comparisons with CIs and tests (each with the rule's "
            "outcome: better, worse, no_difference or borderline, and the rule), verdicts."
        )
    )

    def get_progress(self, run: EvalRun) -> dict[str, int]:
        done, total = progress(run)
        return {"done": done, "total": total}


LAUNCH_RESPONSES = {
    201: EvalRunOutput,
    200: OpenApiResponse(
        EvalRunOutput,
        description="An identical evaluation already queued or running, or the one an earlier "
        "request with this Idempotency-Key started: nothing new was queued.",
    ),
    409: OpenApiResponse(description="This Idempotency-Key was used for a different request."),
}


def launched_run(
    request: Request, project: Project, data: dict[str, Any], start: Callable[[], EvalRun]
) -> Response:
    """Start a run once per Idempotency-Key; 201 for a new run, 200 for one that was there."""
    launch = once_per_key(
        project=project,
        user=acting_user(request),
        scope="evaluation",
        key=idempotency_key_of(request),
        fingerprint=request_fingerprint({"path": request.path, **data}),
        create=start,
        load=lambda pk: eval_run_in_project(project, pk),
    )
    new = launch.created and not launch.obj.deduplicated
    return Response(
        EvalRunOutput(eval_run_in_project(project, launch.obj.pk)).data,
        status=status.HTTP_201_CREATED if new else status.HTTP_200_OK,
    )


class EvalRunCollectionApi(APIView):
    class EvalRunCreateInput(InputSerializer):
        model_version = serializers.IntegerField(
            required=False,
            help_text="Shortcut: this version against its base model zero-shot and 5-shot, on "
            "its validation split (or on test_set). Leave out to list candidates yourself.",
        )
        test_set = serializers.IntegerField(
            required=False,
            help_text="With model_version: evaluate on this held-out test set of the project, "
            "whole, instead of the version's validation split.",
        )
        dataset_version = serializers.IntegerField(required=False)
        split = serializers.ChoiceField(
            choices=EvalSplit.choices,
            default=EvalSplit.VALIDATION,
            help_text="A held-out test set is always evaluated whole: asked for its validation "
            "split, the run scores every item (split all).",
        )
        candidates = CandidateInput(many=True, required=False)
        # Bounds are the service's to enforce.
        max_new_tokens = serializers.IntegerField(required=False, default=64)
        primary_metric = serializers.ChoiceField(choices=list(METRICS), default="exact_match")
        regex_check = serializers.CharField(required=False, allow_blank=True, default="")
        contains_check = serializers.CharField(required=False, allow_blank=True, default="")
        judge = JudgeInput(
            required=False,
            help_text="Optional LLM judge: compares the first candidate with each other one.",
        )

    @extend_schema(
        operation_id="evaluations_list",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("EvalRunPage", EvalRunOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=eval_runs_of(project),
            serializer_class=EvalRunOutput,
        )

    @extend_schema(
        operation_id="evaluations_create",
        summary="Queue an evaluation of several candidates on the same test set; an identical "
        "one already queued or running is answered instead (200)",
        request=EvalRunCreateInput,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses=LAUNCH_RESPONSES,
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        payload = self.EvalRunCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        return launched_run(
            request,
            project,
            payload.validated_data,
            lambda: self._create(request, project, payload.validated_data),
        )

    def _create(self, request: Request, project: Project, data: dict[str, Any]) -> EvalRun:
        if "model_version" in data:
            run = eval_run_for_version(
                project=project,
                model_version=_model_version(project, data["model_version"], "model_version"),
                user=acting_user(request),
                max_new_tokens=data["max_new_tokens"],
                test_set=_dataset_version(project, data["test_set"], "test_set")
                if "test_set" in data
                else None,
            )
        else:
            if "dataset_version" not in data:
                raise serializers.ValidationError(
                    {"dataset_version": ["Give a dataset version (or a model_version)."]}
                )
            run = eval_run_create(
                project=project,
                dataset_version=_dataset_version(
                    project, data["dataset_version"], "dataset_version"
                ),
                split=EvalSplit(data["split"]),
                candidates=[
                    candidate_spec(project, candidate, f"candidates[{index}]")
                    for index, candidate in enumerate(data.get("candidates", []))
                ],
                user=acting_user(request),
                max_new_tokens=data["max_new_tokens"],
                primary_metric=data["primary_metric"],
                regex_check=data["regex_check"],
                contains_check=data["contains_check"],
                judge=JudgeSpec(
                    kind=CandidateKind(data["judge"]["kind"]),
                    model=data["judge"]["model"],
                    endpoint=_endpoint(data["judge"]["endpoint"], "judge.endpoint")
                    if "endpoint" in data["judge"]
                    else None,
                    rubric=data["judge"]["rubric"],
                    max_new_tokens=data["judge"]["max_new_tokens"],
                    input_usd_per_million_tokens=data["judge"].get("input_usd_per_million_tokens"),
                    output_usd_per_million_tokens=data["judge"].get(
                        "output_usd_per_million_tokens"
                    ),
                )
                if "judge" in data
                else None,
            )
        return run


class CheckpointSweepApi(APIView):
    class SweepInput(InputSerializer):
        max_new_tokens = serializers.IntegerField(required=False, default=64)
        primary_metric = serializers.ChoiceField(choices=list(METRICS), default="exact_match")

    @extend_schema(
        operation_id="training_jobs_evaluate_checkpoints",
        summary="Evaluate every checkpoint of a job and recommend one by the task metric",
        request=SweepInput,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses=LAUNCH_RESPONSES,
    )
    def post(self, request: Request, project_id: int, job_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        job = training_job_in_project(project, job_id)
        payload = self.SweepInput(data=request.data)
        payload.is_valid(raise_exception=True)
        return launched_run(
            request,
            project,
            {"training_job": job.pk, **payload.validated_data},
            lambda: checkpoint_sweep_create(
                job=job,
                user=acting_user(request),
                max_new_tokens=payload.validated_data["max_new_tokens"],
                primary_metric=payload.validated_data["primary_metric"],
            ),
        )


class ContaminationOutput(serializers.Serializer[Any]):
    training_version = serializers.IntegerField(source="training_version.pk")
    training_version_name = serializers.CharField(source="training_version")
    candidates = serializers.ListField(child=serializers.CharField())
    item_count = serializers.IntegerField(
        help_text="Test items that also appear, exactly or nearly, in this training split."
    )
    test_count = serializers.IntegerField()
    pair_count = serializers.IntegerField()
    pairs = serializers.ListField(
        child=serializers.DictField(),
        help_text="training_example, training_input, test_example, test_input, test_position, "
        "kind (exact or near), kind_label, similarity; at most 200.",
    )


class EvalRunDetailOutput(EvalRunOutput):
    contamination = ContaminationOutput(
        many=True,
        help_text="Per training version of the fine-tuned candidates: test items it contains. "
        "Empty when no candidate learned from data that overlaps the test set.",
    )


class EvalRunDetailApi(APIView):
    @extend_schema(operation_id="evaluations_retrieve", responses=EvalRunDetailOutput)
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        run = eval_run_in_project(project, run_id)
        # Computed here only, not for the list: it compares the test set with training data.
        contamination = ContaminationOutput(run_contamination(run), many=True).data
        return Response({**EvalRunOutput(run).data, "contamination": contamination})


class EvalRunResumeApi(APIView):
    @extend_schema(
        operation_id="evaluations_resume",
        summary="Queue a failed evaluation again; answers already stored are kept",
        request=None,
        responses={200: EvalRunOutput},
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        run = eval_run_in_project(project, run_id)
        refuse_any_input(request)
        run = eval_run_resume(run=run)
        return Response(EvalRunOutput(eval_run_in_project(project, run.pk)).data)


class EvalRunCancelApi(APIView):
    @extend_schema(
        operation_id="evaluations_cancel",
        summary="Cancel a queued or running evaluation; the worker stops before its next batch "
        "and what it scored is kept but is no result (409 when it has finished)",
        request=None,
        responses={
            200: EvalRunOutput,
            409: OpenApiResponse(description="The evaluation has finished already."),
        },
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        run = eval_run_in_project(project, run_id)
        refuse_any_input(request)
        eval_run_cancel(run=run, user=acting_user(request))
        return Response(EvalRunOutput(eval_run_in_project(project, run.pk)).data)


class ResultOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    candidate = serializers.IntegerField(source="candidate_id")
    position = serializers.IntegerField(source="item.position")
    prompt = serializers.SerializerMethodField()
    reference = serializers.SerializerMethodField()
    output = serializers.CharField()
    error = serializers.CharField()
    scores = serializers.JSONField()
    latency_seconds = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    tags = serializers.ListField(child=serializers.CharField())
    sent_to_review = serializers.IntegerField(source="sent_to_review_id", allow_null=True)

    def get_prompt(self, result: EvalResult) -> list[dict[str, str]]:
        return list(result.item.messages[:-1])

    def get_reference(self, result: EvalResult) -> str:
        return str(result.item.messages[-1]["content"])


class EvalResultListApi(APIView):
    class ResultQuery(ListQueryInput):
        """The failure browser's parameters, every one the list reads, declared with its type
        so the schema documents them; ResultFilter.from_query then checks them against the
        run (a candidate id must be one of its candidates)."""

        a = IdField(
            required=False,
            help_text="The candidate whose answers are listed: a candidate id of this run "
            "(the candidates of GET evaluations/{run_id}/). Default: the run's first.",
        )
        b = IdField(
            required=False,
            help_text="A second candidate to compare with, for the outcomes that name B: a "
            "candidate id of this run. Default: the run's second.",
        )
        outcome = serializers.ChoiceField(
            choices=list(OUTCOMES.items()),
            required=False,
            help_text="Which items: "
            + "; ".join(f"{key}: {label}" for key, label in OUTCOMES.items())
            + ". Default: all.",
        )
        metric = serializers.ChoiceField(
            choices=list(METRICS),
            required=False,
            help_text="The score that decides right and wrong. Default: the run's primary metric.",
        )
        threshold = serializers.FloatField(
            required=False,
            min_value=0.0,
            max_value=1.0,
            help_text="An answer is right when its score reaches this. Default: 1.",
        )
        tag = serializers.CharField(
            required=False, allow_blank=True, help_text="Only answers tagged so (any case)."
        )
        order = serializers.ChoiceField(
            choices=list(RESULT_ORDERS),
            required=False,
            help_text="item: in item order (the default); or A's answers by their confidence "
            "(label scoring), answers without one last.",
        )

    @extend_schema(
        operation_id="evaluations_results",
        summary="Per-item answers, filterable like the failure browser",
        parameters=[ResultQuery, *PAGINATION_PARAMETERS],
        responses=page_serializer("ResultPage", ResultOutput),
    )
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        run = eval_run_in_project(project, run_id)
        self.ResultQuery(data=request.query_params).is_valid(raise_exception=True)
        try:
            chosen = ResultFilter.from_query(run, request.query_params)
        except ValueError as error:
            raise serializers.ValidationError({"filter": [str(error)]}) from error
        return paginated_response(
            request=request,
            view=self,
            queryset=filtered_results(run, chosen),
            serializer_class=ResultOutput,
            query=None,
        )


class EvalResultTagApi(APIView):
    class TagInput(InputSerializer):
        tag = serializers.CharField()
        remove = serializers.BooleanField(default=False)

    @extend_schema(
        operation_id="evaluations_results_tag",
        request=TagInput,
        responses={200: ResultOutput},
    )
    def post(self, request: Request, project_id: int, run_id: int, result_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        run = eval_run_in_project(project, run_id)
        result = eval_result_in_run(run, result_id)
        payload = self.TagInput(data=request.data)
        payload.is_valid(raise_exception=True)
        eval_result_tag(
            result=result,
            tag=payload.validated_data["tag"],
            add=not payload.validated_data["remove"],
        )
        fresh = EvalResult.objects.select_related("item").get(pk=result.pk)
        return Response(ResultOutput(fresh).data)


class SendToReviewApi(APIView):
    class SendInput(InputSerializer):
        results = serializers.ListField(child=IdField(), min_length=1)

    class SendOutput(serializers.Serializer[Any]):
        created = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        operation_id="evaluations_send_to_review",
        summary="Turn chosen answers into pending examples for reviewers to fix",
        request=SendInput,
        responses={201: SendOutput},
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.EVALUATE)
        run = eval_run_in_project(project, run_id)
        payload = self.SendInput(data=request.data)
        payload.is_valid(raise_exception=True)
        created = eval_results_send_to_review(
            run=run, result_ids=payload.validated_data["results"], user=acting_user(request)
        )
        return Response(
            self.SendOutput({"created": [example.pk for example in created]}).data,
            status=status.HTTP_201_CREATED,
        )


# --- the advisor ------------------------------------------------------------------------------


def plain_data(value: object) -> Any:
    """The advisor's answer as JSON, whatever its dataclasses hold: each dataclass becomes an
    object of its fields and its properties (a field or property added to the advisor later
    appears with no change here), money (Decimal) a string so no cent is lost to a float, a
    number that is not finite null, a table row (a model) its id and name."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Enum):
        return plain_data(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Model):
        return {"id": value.pk, "name": str(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {field.name: plain_data(getattr(value, field.name)) for field in fields(value)}
        for name in _public_properties(type(value)):
            data.setdefault(name, plain_data(getattr(value, name)))
        return data
    if isinstance(value, Mapping):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_data(item) for item in value]
    return str(value)


def _public_properties(cls: type) -> list[str]:
    """The public properties a class and its bases define, each once, in definition order."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name, attribute in vars(klass).items():
            if isinstance(attribute, property) and not name.startswith("_"):
                names[name] = None
    return list(names)


MONEY_HELP = "US dollars as a decimal string, unrounded (round for display only)."


def _money(what: str = "") -> serializers.CharField:
    return serializers.CharField(help_text=f"{what} {MONEY_HELP}".strip())


class BreakEvenOutput(serializers.Serializer[Any]):
    alternative = serializers.CharField(
        help_text="The prompted option the fine-tune is weighed against."
    )
    status = serializers.ChoiceField(
        choices=["cheaper_from_first_request", "pays_back", "never_pays_back"]
    )
    savings_per_request = _money()
    fixed_monthly_savings = _money()
    training_cost = _money()
    horizon_months = serializers.IntegerField()
    monthly_requests = serializers.IntegerField()
    monthly_savings = _money()
    payback_months = serializers.CharField(
        allow_null=True, help_text="Months to repay the training (decimal); null: never."
    )
    min_monthly_requests = serializers.CharField(
        allow_null=True,
        help_text="The volume from which training pays back within the horizon; null: none.",
    )
    max_monthly_requests = serializers.CharField(
        allow_null=True, help_text="The volume up to which it does; null: no upper limit."
    )
    pays_back_within_horizon = serializers.BooleanField()
    pays_back_at_volume = serializers.BooleanField()


class AdviceOptionOutput(serializers.Serializer[Any]):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["fine_tuned", "few_shot", "zero_shot", "larger_model"])
    kind_label = serializers.CharField()
    is_fine_tuned = serializers.BooleanField()
    quality = serializers.FloatField(help_text="Mean of the metric on the evaluated items.")
    pricing = serializers.JSONField(
        help_text="usd_per_million_input, usd_per_million_output, usd_per_request, "
        "usd_per_hosting_hour and monthly_fixed_usd, as decimal strings."
    )
    request_shape = serializers.JSONField(
        help_text="mean_prompt_tokens and mean_completion_tokens of one request."
    )
    vs_fine_tuned = serializers.JSONField(
        allow_null=True,
        help_text="The decision rule's verdict on the fine-tuned model against this option on "
        "the same items (outcome, comparison with its interval, test, rule); null for the "
        "fine-tuned option itself.",
    )
    one_off_usd = _money()


class AdviceRowOutput(serializers.Serializer[Any]):
    option = AdviceOptionOutput()
    cost_per_request = _money()
    monthly_cost = _money()
    horizon_cost = _money("The one-off cost plus the monthly cost over the horizon.")
    break_even = BreakEvenOutput(allow_null=True, help_text="Null for the fine-tuned row.")
    name = serializers.CharField()
    quality = serializers.FloatField()
    payback = serializers.CharField(help_text="The break-even in words; empty for the fine-tune.")


class PitfallOutput(serializers.Serializer[Any]):
    code = serializers.CharField(
        help_text="prompting_is_enough, insufficient_data, overfitting or "
        "requirements_change_often."
    )
    title = serializers.CharField()
    explanation = serializers.CharField()


class AdviceOutput(serializers.Serializer[Any]):
    rows = AdviceRowOutput(many=True, help_text="The side-by-side table, one row per option.")
    pitfalls = PitfallOutput(many=True, help_text="The guide's pitfalls that apply.")
    pitfall_codes = serializers.ListField(child=serializers.CharField())
    recommendation = serializers.CharField()
    monthly_requests = serializers.IntegerField()
    horizon_months = serializers.IntegerField()
    rule = serializers.CharField(help_text="The decision rule the verdicts follow.")


class RunAdviceOutput(serializers.Serializer[Any]):
    """What the advisor's page shows, for programs. Each object also carries whatever else the
    advisor computes (every field and property of its dataclasses): a client reads the keys it
    knows."""

    run = serializers.IntegerField()
    available = serializers.BooleanField(
        help_text="False when the run cannot answer (no fine-tuned candidate, not scored yet); "
        "reason says why and the rest is null."
    )
    reason = serializers.CharField()
    monthly_requests = serializers.IntegerField()
    horizon_months = serializers.IntegerField()
    metric = serializers.CharField(allow_null=True, help_text="The metric the advice weighs.")
    metric_label = serializers.CharField(allow_null=True)
    fine_tuned = serializers.JSONField(
        allow_null=True, help_text="The fine-tuned candidate weighed: its id and name."
    )
    advice = AdviceOutput(allow_null=True)


class EvalRunAdviceApi(APIView):
    class AdviceQuery(InputSerializer):
        monthly_requests = serializers.IntegerField(
            required=False,
            default=DEFAULT_MONTHLY_REQUESTS,
            min_value=1,
            max_value=MAX_MONTHLY_REQUESTS,
            help_text="Requests expected a month.",
        )
        horizon_months = serializers.IntegerField(
            required=False,
            default=DEFAULT_HORIZON_MONTHS,
            min_value=1,
            max_value=MAX_HORIZON_MONTHS,
            help_text="Months within which training must pay for itself.",
        )
        fine_tuned = IdField(
            required=False,
            help_text="The fine-tuned candidate to weigh (a candidate id of this run). "
            "Default: the run's first fine-tuned candidate.",
        )

    @extend_schema(
        operation_id="evaluations_advice",
        summary="Fine-tune or prompt? The advisor's table, break-even, pitfalls and "
        "recommendation for this run, at the volume and horizon asked",
        parameters=[AdviceQuery],
        responses=RunAdviceOutput,
    )
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project, _ = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        run = eval_run_in_project(project, run_id)
        query = self.AdviceQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        asked = query.validated_data
        fine_tuned = asked.get("fine_tuned")
        if (
            fine_tuned is not None
            and not run.candidates.filter(pk=fine_tuned, kind__in=FINE_TUNED_KINDS).exists()
        ):
            raise serializers.ValidationError(
                {"fine_tuned": [f"No fine-tuned candidate {fine_tuned} in this evaluation."]}
            )
        body: dict[str, Any] = {
            "run": run.pk,
            "monthly_requests": asked["monthly_requests"],
            "horizon_months": asked["horizon_months"],
        }
        try:
            result = run_advice(
                run,
                monthly_requests=asked["monthly_requests"],
                horizon_months=asked["horizon_months"],
                fine_tuned_id=fine_tuned,
            )
        except NoAdvice as reason:
            empty = {"metric": None, "metric_label": None, "fine_tuned": None, "advice": None}
            return Response({**body, "available": False, "reason": str(reason), **empty})
        # Not through RunAdviceOutput, which would keep only the keys it declares: the schema
        # documents the shape, and plain_data carries everything the advisor computed.
        return Response({**body, "available": True, "reason": "", **plain_data(result)})
