"""Writes for evaluation: create a run and its candidates, tag failures, send failures back to
review. The worker side (scoring every item, resuming) is in runner.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from catalog.secrets import endpoint_refusal, model_refusal
from datasets.contracts import LABEL_SET
from datasets.models import DatasetVersion, Example, OriginKind, Split
from datasets.services import example_derive
from ftportal.errors import ApplicationError, ConflictError
from ftportal.idempotency import request_fingerprint
from ftportal.models import Project
from ftportal.ownership import attempts_renew, ownership_release
from ftportal.spending import new_spending_check
from ftportal.state import state_change
from providers.base import AnswerConstraint, ProviderError
from registry.models import ModelVersion
from registry.selectors import production_version
from training.models import Checkpoint, TrainingJob

from .contracts import contract_of
from .judge import DEFAULT_JUDGE_MAX_NEW_TOKENS
from .models import (
    ACTIVE_EVAL_STATUSES,
    EVAL_TRANSITIONS,
    Candidate,
    CandidateKind,
    EvalKind,
    EvalResult,
    EvalRun,
    EvalSplit,
    EvalStatus,
    HumanPreference,
    PairOutcome,
    Prompting,
)
from .prompting import INPUT_PLACEHOLDER, answer_of, prompt_of
from .scoring import METRICS, Checks

MAX_NEW_TOKENS_LIMIT = 1024
MAX_FEW_SHOT_K = 64
MAX_JUDGE_NEW_TOKENS = 4096
HOSTED_KINDS = (CandidateKind.OPENAI_COMPATIBLE, CandidateKind.ANTHROPIC)


@dataclass(frozen=True)
class JudgeSpec:
    """A hosted chat model that judges the reference candidate against each other one."""

    kind: CandidateKind
    model: str
    # Hosted judges: the admin-registered endpoint that serves ``model``.
    endpoint: Endpoint | None = None
    rubric: str = ""
    max_new_tokens: int = DEFAULT_JUDGE_MAX_NEW_TOKENS
    input_usd_per_million_tokens: Decimal | None = None
    output_usd_per_million_tokens: Decimal | None = None


JUDGE_KINDS = (CandidateKind.BASE, *HOSTED_KINDS)


def _check_judge(judge: JudgeSpec) -> None:
    """A hosted model, or a local catalog model (``kind`` base, ``model`` its catalog key)."""
    if judge.kind not in JUDGE_KINDS:
        raise _invalid(
            "judge.kind", "The judge is a local catalog model, OpenAI-compatible or Anthropic."
        )
    if not judge.model.strip():
        raise _invalid("judge.model", "Name the judge's model id.")
    if (
        judge.kind == CandidateKind.BASE
        and not BaseModel.objects.filter(key=judge.model.strip(), provider=Provider.LOCAL).exists()
    ):
        raise _invalid("judge.model", f"No local model {judge.model!r} in the catalog.")
    for price_field in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
        price = getattr(judge, price_field)
        if price is not None and price < 0:
            raise _invalid(f"judge.{price_field}", "A price cannot be negative.")
    if not 1 <= judge.max_new_tokens <= MAX_JUDGE_NEW_TOKENS:
        raise _invalid(
            "judge.max_new_tokens", f"Between 1 and {MAX_JUDGE_NEW_TOKENS} tokens for the judge."
        )
    _check_endpoint(judge.kind, judge.endpoint, judge.model.strip(), "judge", "model")


@dataclass(frozen=True)
class CandidateSpec:
    """What a user asks to evaluate; exactly the fields its kind needs are set."""

    kind: CandidateKind
    model_version: ModelVersion | None = None
    checkpoint: Checkpoint | None = None
    base_model: BaseModel | None = None
    api_model: str = ""
    # Hosted candidates: the admin-registered endpoint that serves ``api_model``.
    endpoint: Endpoint | None = None
    prompting: Prompting = Prompting.ZERO_SHOT
    few_shot_k: int = 0
    few_shot_seed: int = 0
    shots_version: DatasetVersion | None = None
    system_prompt: str = ""
    user_template: str = INPUT_PLACEHOLDER
    input_usd_per_million_tokens: Decimal | None = None
    output_usd_per_million_tokens: Decimal | None = None
    label: str = ""
    # Constrain a local model's decoding to the evaluated version's answer contract.
    constrained: bool = False
    # A local model answers by ranking the version's label set by likelihood (no generation).
    label_scoring: bool = False
    # With label scoring: answers less likely than this (0 to 1) abstain.
    abstain_below: float | None = None


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, extra={"field": field})


# Which endpoint kinds speak each hosted candidate kind's API.
ENDPOINT_KINDS_FOR: dict[str, frozenset[str]] = {
    # A vLLM server for LoRA adapters answers OpenAI's chat completions for its base model too.
    CandidateKind.OPENAI_COMPATIBLE: frozenset(
        {EndpointKind.OPENAI, EndpointKind.OPENAI_COMPATIBLE, EndpointKind.VLLM}
    ),
    CandidateKind.ANTHROPIC: frozenset({EndpointKind.ANTHROPIC}),
}


def hosted_kind_of(endpoint: Endpoint) -> CandidateKind:
    """The candidate kind whose API ``endpoint`` speaks (for forms that pick only an endpoint)."""
    if endpoint.kind == EndpointKind.ANTHROPIC:
        return CandidateKind.ANTHROPIC
    return CandidateKind.OPENAI_COMPATIBLE


def _check_endpoint(
    kind: CandidateKind, endpoint: Endpoint | None, model: str, field: str, model_field: str
) -> None:
    """A hosted candidate or judge names a registered, enabled endpoint that speaks its API
    and serves its model; anything else names none. Users never give a URL or a key."""
    if kind not in ENDPOINT_KINDS_FOR:
        if endpoint is not None:
            raise _invalid(f"{field}.endpoint", "Only hosted models are called at an endpoint.")
        return
    if endpoint is None:
        raise _invalid(
            f"{field}.endpoint",
            "Name a registered endpoint (GET /api/projects/<id>/endpoints/ lists them; admins "
            "register them).",
        )
    if endpoint.kind not in ENDPOINT_KINDS_FOR[kind]:
        raise _invalid(
            f"{field}.endpoint",
            f"Endpoint {endpoint.name} speaks the {endpoint.get_kind_display()}, not the "
            f"{CandidateKind(kind).label}.",
        )
    refusal = endpoint_refusal(endpoint)
    if refusal:
        raise _invalid(f"{field}.endpoint", f"Endpoint {endpoint.name}: {refusal}")
    refusal = model_refusal(endpoint, model=model)
    if refusal:
        raise _invalid(f"{field}.{model_field}", f"Endpoint {endpoint.name}: {refusal}")


def _check_spec(spec: CandidateSpec, field: str, project: Project) -> None:
    """ApplicationError naming ``field`` (for example ``candidates[2].api_model``)."""
    if spec.kind == CandidateKind.MODEL_VERSION:
        if spec.model_version is None:
            raise _invalid(f"{field}.model_version", "A model version candidate needs a version.")
        if spec.model_version.registered_model.project_id != project.pk:
            raise _invalid(
                f"{field}.model_version", "The model version belongs to another project."
            )
    elif spec.kind == CandidateKind.CHECKPOINT:
        if spec.checkpoint is None:
            raise _invalid(f"{field}.checkpoint", "A checkpoint candidate needs a checkpoint.")
        if spec.checkpoint.job.project_id != project.pk:
            raise _invalid(f"{field}.checkpoint", "The checkpoint belongs to another project.")
        if not spec.checkpoint.path and not spec.checkpoint.provider_model_id:
            raise _invalid(f"{field}.checkpoint", f"{spec.checkpoint} holds no model.")
    elif spec.kind == CandidateKind.BASE:
        if spec.base_model is None:
            raise _invalid(f"{field}.base_model", "A base-model candidate needs a base model.")
    elif spec.kind in HOSTED_KINDS and not spec.api_model.strip():
        raise _invalid(f"{field}.api_model", "Name the provider's model id.")
    _check_endpoint(spec.kind, spec.endpoint, spec.api_model.strip(), field, "api_model")
    if spec.prompting == Prompting.FEW_SHOT and not 1 <= spec.few_shot_k <= MAX_FEW_SHOT_K:
        raise _invalid(f"{field}.few_shot_k", f"k must be between 1 and {MAX_FEW_SHOT_K}.")
    if INPUT_PLACEHOLDER not in spec.user_template:
        raise _invalid(
            f"{field}.user_template", f"The user template must contain {INPUT_PLACEHOLDER}."
        )
    for price_field in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
        price = getattr(spec, price_field)
        if price is not None and price < 0:
            raise _invalid(f"{field}.{price_field}", "A price cannot be negative.")


def _check_constrained(spec: CandidateSpec, field: str, dataset_version: DatasetVersion) -> None:
    if not spec.constrained:
        return
    base = _base_model_of(spec)
    local = base is not None and base.provider == Provider.LOCAL
    if spec.kind in HOSTED_KINDS or not local:
        raise _invalid(
            f"{field}.constrained",
            "Only local models (the base model or its fine-tuned versions) can be constrained "
            "to the answer contract.",
        )
    if not contract_of(dataset_version):
        raise _invalid(
            f"{field}.constrained",
            f"{dataset_version} has no answer contract to constrain generation to; declare one "
            "on the dataset (a label set, a JSON Schema or a regular expression) and freeze a "
            "new version.",
        )
    try:
        AnswerConstraint.from_contract(contract_of(dataset_version))
    except ProviderError as error:
        raise _invalid(f"{field}.constrained", str(error)) from error


def _check_label_scoring(spec: CandidateSpec, field: str, dataset_version: DatasetVersion) -> None:
    if spec.abstain_below is not None:
        if not spec.label_scoring:
            raise _invalid(
                f"{field}.abstain_below",
                "Abstaining needs label scoring: only a ranked label has a confidence.",
            )
        if not 0 < spec.abstain_below < 1:
            raise _invalid(
                f"{field}.abstain_below",
                f"A confidence between 0 and 1 (exclusive), not {spec.abstain_below}.",
            )
    if not spec.label_scoring:
        return
    base = _base_model_of(spec)
    if spec.kind in HOSTED_KINDS or base is None or base.provider != Provider.LOCAL:
        raise _invalid(
            f"{field}.label_scoring",
            "Only local models (the base model or its fine-tuned versions) can rank labels by "
            "likelihood; hosted APIs do not return the probability of a given answer.",
        )
    if spec.constrained:
        raise _invalid(
            f"{field}.label_scoring",
            "Label scoring answers with a label by construction; ask for it or for constrained "
            "decoding, not both.",
        )
    if contract_of(dataset_version).get("kind") != LABEL_SET:
        raise _invalid(
            f"{field}.label_scoring",
            f"{dataset_version} has no label-set answer contract to rank; declare the labels on "
            "the dataset and freeze a new version.",
        )


def _check_shots(
    spec: CandidateSpec,
    field: str,
    project: Project,
    dataset_version: DatasetVersion,
    split: EvalSplit,
) -> None:
    source = spec.shots_version or dataset_version
    if source.dataset.project_id != project.pk:
        raise _invalid(f"{field}.shots_version", "The dataset version belongs to another project.")
    if source.is_test_set:
        # A test set is never shown to a model as examples, as it is never trained on.
        raise _invalid(
            f"{field}.shots_version",
            f"{source} is a held-out test set: few-shot examples are drawn from the train split "
            "of a training version; choose one to draw them from (shots_version).",
        )
    if split == EvalSplit.ALL and source.pk == dataset_version.pk:
        # Every item of the version is a test item: shots from it would give answers away.
        raise _invalid(
            f"{field}.shots_version",
            "When every item is a test item, draw the shots from another dataset version.",
        )
    train_count = source.items.filter(split=Split.TRAIN).count()
    if train_count < spec.few_shot_k:
        raise _invalid(
            f"{field}.few_shot_k",
            f"{spec.few_shot_k}-shot prompting needs {spec.few_shot_k} training examples; "
            f"{source} has {train_count}.",
        )


def _base_model_of(spec: CandidateSpec) -> BaseModel | None:
    if spec.model_version is not None:
        return spec.model_version.base_model
    if spec.checkpoint is not None:
        return spec.checkpoint.job.base_model
    return spec.base_model


def _bills_tokens(candidates: Sequence[CandidateSpec], judge: JudgeSpec | None) -> bool:
    """Whether a provider bills the run per token: a hosted candidate (a hosted model, or a
    version, checkpoint or base model of a hosted base model) or a hosted judge. The same
    line ``evaluation.spending`` draws between token spends and worker time."""
    if judge is not None and judge.kind != CandidateKind.BASE:
        return True
    local_kinds = (CandidateKind.BASE, CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT)
    for spec in candidates:
        base = _base_model_of(spec)
        if spec.kind not in local_kinds or base is None or base.provider != Provider.LOCAL:
            return True
    return False


def _prices(spec: CandidateSpec) -> tuple[Decimal | None, Decimal | None]:
    """The spec's prices, else the catalog's for hosted base models; local models cost machine
    time, which the training estimate, not a token price, accounts for."""
    base = _base_model_of(spec)
    catalog_in = catalog_out = None
    if base is not None and base.provider != Provider.LOCAL:
        catalog_in, catalog_out = (
            base.input_usd_per_million_tokens,
            base.output_usd_per_million_tokens,
        )
    return (
        spec.input_usd_per_million_tokens
        if spec.input_usd_per_million_tokens is not None
        else catalog_in,
        spec.output_usd_per_million_tokens
        if spec.output_usd_per_million_tokens is not None
        else catalog_out,
    )


def candidate_label(spec: CandidateSpec) -> str:
    """The name the evaluation page shows: the user's label or one made from the model and its
    prompting, and whether its decoding was constrained (which changes what it can answer)."""
    label = spec.label.strip() or default_label(spec)
    if spec.label_scoring:
        return f"{label}, ranking labels by likelihood"
    return f"{label}, constrained to contract" if spec.constrained else label


def default_label(spec: CandidateSpec) -> str:
    prompting = f"{spec.few_shot_k}-shot" if spec.prompting == Prompting.FEW_SHOT else "zero-shot"
    if spec.model_version is not None:
        return f"{spec.model_version} (fine-tuned)"
    if spec.checkpoint is not None:
        return f"{spec.checkpoint.job.model_name} step {spec.checkpoint.step}"
    if spec.base_model is not None:
        return f"{spec.base_model.display_name} ({prompting})"
    provider = "Anthropic" if spec.kind == CandidateKind.ANTHROPIC else "OpenAI-compatible"
    return f"{spec.api_model} via {provider} ({prompting})"


def evaluated_split(dataset_version: DatasetVersion, split: EvalSplit) -> EvalSplit:
    """The split a run scores: a held-out test set has no validation split and is evaluated
    whole, so a request for its validation split (the API's and the form's default) is made
    ALL rather than refused."""
    return EvalSplit.ALL if dataset_version.is_test_set else split


def _check_test_set(dataset_version: DatasetVersion, split: EvalSplit) -> None:
    items = dataset_version.items
    if split == EvalSplit.VALIDATION and not items.filter(split=Split.VALIDATION).exists():
        raise _invalid("split", f"{dataset_version} has no validation examples.")
    if not items.exists():
        raise _invalid("dataset_version", f"{dataset_version} has no examples.")


def eval_run_create(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    candidates: Sequence[CandidateSpec],
    user: User,
    split: EvalSplit = EvalSplit.VALIDATION,
    max_new_tokens: int = 64,
    primary_metric: str = "exact_match",
    regex_check: str = "",
    contains_check: str = "",
    kind: EvalKind = EvalKind.COMPARISON,
    training_job: TrainingJob | None = None,
    judge: JudgeSpec | None = None,
) -> EvalRun:
    """Queue an evaluation of every candidate on the same items. The first candidate is the
    one the verdicts are about ("A beats B")."""
    if dataset_version.dataset.project_id != project.pk:
        raise _invalid("dataset_version", "The dataset version belongs to another project.")
    if not candidates:
        raise _invalid("candidates", "Add at least one candidate.")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise _invalid(
            "max_new_tokens", f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}."
        )
    if primary_metric not in METRICS:
        raise _invalid(
            "primary_metric", f"Unknown metric {primary_metric!r}; one of {', '.join(METRICS)}."
        )
    try:
        Checks(regex=regex_check, contains=contains_check).validate()
    except ValueError as error:
        raise _invalid("regex_check", str(error)) from error
    split = evaluated_split(dataset_version, split)
    _check_test_set(dataset_version, split)
    if judge is not None:
        _check_judge(judge)
        if len(candidates) < 2:
            raise _invalid("judge", "A judge compares candidates: add at least two.")
    for index, spec in enumerate(candidates):
        _check_spec(spec, f"candidates[{index}]", project)
        _check_constrained(spec, f"candidates[{index}]", dataset_version)
        _check_label_scoring(spec, f"candidates[{index}]", dataset_version)
    for index, spec in enumerate(candidates):
        if spec.prompting == Prompting.FEW_SHOT:
            _check_shots(spec, f"candidates[{index}]", project, dataset_version, split)
    if _bills_tokens(candidates, judge):
        # A budget's hard cap refuses what a provider bills per token; a run wholly on our own
        # hardware costs worker time only and may still run (issue 16: "hosted evaluations").
        new_spending_check(project.pk)
    with transaction.atomic():
        run = EvalRun.objects.create(
            project=project,
            dataset_version=dataset_version,
            split=split,
            kind=kind,
            training_job=training_job,
            max_new_tokens=max_new_tokens,
            primary_metric=primary_metric,
            regex_check=regex_check,
            contains_check=contains_check,
            judge_kind=judge.kind if judge else "",
            judge_model=judge.model.strip() if judge else "",
            judge_endpoint=judge.endpoint if judge else None,
            judge_rubric=judge.rubric.strip() if judge else "",
            judge_max_new_tokens=judge.max_new_tokens if judge else DEFAULT_JUDGE_MAX_NEW_TOKENS,
            judge_input_usd_per_million_tokens=judge.input_usd_per_million_tokens
            if judge
            else None,
            judge_output_usd_per_million_tokens=judge.output_usd_per_million_tokens
            if judge
            else None,
            created_by=user,
        )
        for position, spec in enumerate(candidates):
            price_in, price_out = _prices(spec)
            Candidate.objects.create(
                run=run,
                position=position,
                label=candidate_label(spec)[:200],
                kind=spec.kind,
                base_model=_base_model_of(spec),
                model_version=spec.model_version,
                checkpoint=spec.checkpoint,
                api_model=spec.api_model.strip(),
                endpoint=spec.endpoint,
                prompting=spec.prompting,
                few_shot_k=spec.few_shot_k if spec.prompting == Prompting.FEW_SHOT else 0,
                few_shot_seed=spec.few_shot_seed,
                shots_version=spec.shots_version if spec.prompting == Prompting.FEW_SHOT else None,
                system_prompt=spec.system_prompt,
                user_template=spec.user_template,
                input_usd_per_million_tokens=price_in,
                output_usd_per_million_tokens=price_out,
                constrained=spec.constrained,
                label_scoring=spec.label_scoring,
                abstain_below=spec.abstain_below,
            )
        same = _same_request_active(run)
        if same is not None:
            return same
        transaction.on_commit(lambda: eval_run_dispatch(run))
    return run


# What a run or candidate records about how it went, not what was asked: left out of the
# fingerprint, so every setting a request can carry (now and later) is in it.
_RUN_OUTCOME_FIELDS = frozenset(
    {
        "id",
        "status",
        "error",
        "attempts",
        "resumed_after_attempts",
        "worker",
        "heartbeat_at",
        "report",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "cancelled_by",
        "request_fingerprint",
    }
)
_CANDIDATE_OUTCOME_FIELDS = frozenset(
    {
        "id",
        "run",
        "metrics",
        "example_count",
        "failed_count",
        "generation_seconds",
        "prompt_record",
    }
)


def _settings_of(row: models.Model, outcome_fields: frozenset[str]) -> dict[str, object]:
    return {
        field.attname: getattr(row, field.attname)
        for field in row._meta.concrete_fields
        if field.name not in outcome_fields
    }


def eval_run_fingerprint(run: EvalRun) -> str:
    """What was asked: the run's settings and its candidates', in order; two requests that
    would score the same answers the same way have the same fingerprint."""
    return request_fingerprint(
        {
            "run": _settings_of(run, _RUN_OUTCOME_FIELDS),
            "candidates": [
                _settings_of(candidate, _CANDIDATE_OUTCOME_FIELDS)
                for candidate in run.candidates.order_by("position")
            ],
        }
    )


def _same_request_active(run: EvalRun) -> EvalRun | None:
    """The queued or running run identical to ``run`` (just created in this transaction), which
    is then deleted again; None when there is none and ``run`` stays.

    Checked by the unique constraint on the fingerprint of active runs, not by a read: a
    concurrent identical request blocks on the constraint until the first commits, then finds
    its run (a fuzzer once queued 130 identical runs)."""
    fingerprint = eval_run_fingerprint(run)
    for _ in range(3):
        try:
            with transaction.atomic():
                EvalRun.objects.filter(pk=run.pk).update(request_fingerprint=fingerprint)
        except IntegrityError:
            same = EvalRun.objects.filter(
                project_id=run.project_id,
                request_fingerprint=fingerprint,
                status__in=ACTIVE_EVAL_STATUSES,
            ).first()
            if same is None:
                continue  # it finished in between; try again
            run.delete()
            same.deduplicated = True
            return same
        run.request_fingerprint = fingerprint
        return None
    raise ConflictError("An identical evaluation keeps starting and finishing; try again.")


def transition(run: EvalRun, target: EvalStatus, **changes: object) -> None:
    """Move a run to ``target`` if EVAL_TRANSITIONS allows it, with the other field changes
    (they win over the start and finish stamps set here)."""
    stamps: dict[str, object] = {}
    if target == EvalStatus.RUNNING:
        stamps["started_at"] = run.started_at or timezone.now()
    elif target in (EvalStatus.SUCCEEDED, EvalStatus.FAILED, EvalStatus.CANCELLED):
        stamps["finished_at"] = timezone.now()
    state_change(
        run,
        kind="evaluation",
        target=target,
        allowed=EVAL_TRANSITIONS,
        changes={**stamps, **changes},
    )


def eval_run_cancel(*, run: EvalRun, user: User) -> EvalRun:
    """Stop a queued or running evaluation. A queued run never starts; a running one's worker
    sees the change before its next batch (every write it makes checks that the run is still
    running) and stops. Answers already scored stay stored, under a cancelled run: no report
    and no verdict are made of them."""
    with transaction.atomic():
        locked = EvalRun.objects.select_for_update().get(pk=run.pk)
        ownership_release(locked)
        transition(locked, EvalStatus.CANCELLED, cancelled_by=user)
    return locked


def eval_run_resume(*, run: EvalRun) -> EvalRun:
    """Queue a failed run again (after a rate limit that outlasted the retries, or a fixed
    credential); it skips every item already answered."""
    with transaction.atomic():
        locked = EvalRun.objects.select_for_update().get(pk=run.pk)
        try:
            with transaction.atomic():
                attempts_renew(locked)
                transition(locked, EvalStatus.QUEUED, error="")
        except IntegrityError:
            raise ConflictError(
                "An identical evaluation is queued or running already; follow that one or "
                "cancel it first."
            ) from None
        transaction.on_commit(lambda: eval_run_dispatch(locked))
    return locked


def eval_run_dispatch(run: EvalRun) -> None:
    # Deferred: evaluation.tasks imports this module to do the work it queues.
    from .tasks import execute_eval_run

    execute_eval_run.delay(run.pk)


def comparison_specs_for(version: ModelVersion) -> list[CandidateSpec]:
    """The guide's comparison for a fine-tuned version: itself, the version production serves
    (when that is another one: the promotion gate needs them on the same test set), its base
    zero-shot, and its base few-shot with 5 examples when the training split has them."""
    specs = [CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=version)]
    production = production_version(version.registered_model)
    if production is not None and production.pk != version.pk:
        specs.append(
            CandidateSpec(
                kind=CandidateKind.MODEL_VERSION,
                model_version=production,
                label=f"{production} (production)",
            )
        )
    specs.append(CandidateSpec(kind=CandidateKind.BASE, base_model=version.base_model))
    train_count = version.dataset_version.items.filter(split=Split.TRAIN).count()
    if train_count >= 5:
        specs.append(
            CandidateSpec(
                kind=CandidateKind.BASE,
                base_model=version.base_model,
                prompting=Prompting.FEW_SHOT,
                few_shot_k=5,
            )
        )
    return specs


def _local(spec: CandidateSpec) -> bool:
    base = _base_model_of(spec)
    return spec.kind not in HOSTED_KINDS and base is not None and base.provider == Provider.LOCAL


def eval_run_for_version(
    *,
    project: Project,
    model_version: ModelVersion,
    user: User,
    max_new_tokens: int = 64,
    test_set: DatasetVersion | None = None,
) -> EvalRun:
    """The guide's evaluation of a fine-tuned version: on its own validation split, or on a
    held-out ``test_set`` of the project, whole (the few-shot candidate's examples then come
    from the train split the version learned from). On a label-set contract every local
    candidate answers constrained to the labels."""
    if model_version.registered_model.project_id != project.pk:
        raise _invalid("model_version", "The model version belongs to another project.")
    specs = comparison_specs_for(model_version)
    if test_set is None:
        evaluated = model_version.dataset_version
    else:
        if test_set.dataset.project_id != project.pk or not test_set.is_test_set:
            raise _invalid("test_set", f"{test_set} is not a held-out test set of this project.")
        evaluated = test_set
        specs = [
            replace(spec, shots_version=model_version.dataset_version)
            if spec.prompting == Prompting.FEW_SHOT
            else spec
            for spec in specs
        ]
    if contract_of(evaluated).get("kind") == LABEL_SET:
        # Local models answer within the label set (every answer a label), so the comparison
        # is between the labels they choose, not between their ways of writing them.
        specs = [replace(spec, constrained=True) if _local(spec) else spec for spec in specs]
    return eval_run_create(
        project=project,
        dataset_version=evaluated,
        split=EvalSplit.ALL if test_set is not None else EvalSplit.VALIDATION,
        candidates=specs,
        user=user,
        max_new_tokens=max_new_tokens,
    )


def checkpoint_sweep_create(
    *, job: TrainingJob, user: User, max_new_tokens: int = 64, primary_metric: str = "exact_match"
) -> EvalRun:
    """Every checkpoint of a job on its validation split, to pick the best by the task metric
    rather than by loss."""
    checkpoints = [c for c in job.checkpoints.order_by("step") if c.path or c.provider_model_id]
    if not checkpoints:
        raise ApplicationError(f"{job} has no checkpoints to evaluate.")
    return eval_run_create(
        project=job.project,
        dataset_version=job.dataset_version,
        candidates=[
            CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=c) for c in checkpoints
        ],
        user=user,
        max_new_tokens=max_new_tokens,
        primary_metric=primary_metric,
        kind=EvalKind.CHECKPOINTS,
        training_job=job,
    )


FAILURE_TAG_MAX_LENGTH = 50


def eval_result_tag(*, result: EvalResult, tag: str, add: bool = True) -> EvalResult:
    """Add or remove a failure tag ("wrong label", "hallucinated field", ...) on one answer."""
    cleaned = " ".join(tag.split()).lower()
    if not cleaned or len(cleaned) > FAILURE_TAG_MAX_LENGTH:
        raise _invalid("tag", f"A tag is 1 to {FAILURE_TAG_MAX_LENGTH} characters.")
    with transaction.atomic():
        locked = EvalResult.objects.select_for_update().get(pk=result.pk)
        tags = [t for t in locked.tags if t != cleaned]
        if add:
            tags.append(cleaned)
        locked.tags = sorted(tags)
        locked.save(update_fields=["tags"])
    return locked


def eval_results_send_to_review(
    *, run: EvalRun, result_ids: Sequence[int], user: User
) -> list[Example]:
    """Each chosen answer becomes a new pending example in the run's dataset: the item's prompt
    with the model's answer, for a reviewer to fix. Its metadata says where it came from; an
    answer already sent is not sent twice."""
    created: list[Example] = []
    with transaction.atomic():
        # Locked, so two people sending the same failure at once create one example.
        results = list(
            # of=self: the item's example is an outer join, which FOR UPDATE cannot lock.
            EvalResult.objects.select_for_update(of=("self",))
            .filter(candidate__run=run, pk__in=result_ids)
            .select_related("item__example", "candidate")
            .order_by("pk")
        )
        missing = sorted(set(result_ids) - {r.pk for r in results})
        if missing:
            raise _invalid("results", f"No results {missing} in {run}.")
        for result in results:
            if result.sent_to_review_id is None:
                created.append(_review_example_from(run, result, user))
    return created


def _review_example_from(run: EvalRun, result: EvalResult, user: User) -> Example:
    item = result.item
    if item.example is None:
        raise _invalid(
            "results",
            f"Item {item.position} of {run.dataset_version} has lost its example; an answer "
            "with no origin cannot be sent, as nothing would keep it out of training.",
        )
    # Derived from the item's example: while that example is held out, the copy is too.
    example = example_derive(
        origin=item.example,
        messages=[*prompt_of(item.messages), {"role": "assistant", "content": result.output}],
        origin_kind=OriginKind.EVALUATION_FAILURE,
        metadata={
            "source": "evaluation",
            "eval_run": run.pk,
            "candidate": result.candidate.label,
            "dataset_version": run.dataset_version.number,
            "item_position": item.position,
            "source_example": item.example_id,
            "expected_answer": answer_of(item.messages),
            "sent_by": user.get_username(),
        },
    )
    EvalResult.objects.filter(pk=result.pk).update(sent_to_review=example)
    return example


def human_preference_record(
    *, candidate_a: Candidate, candidate_b: Candidate, item_id: int, rater: User, choice: str
) -> HumanPreference:
    """A person's pairwise preference on one item (their latest choice counts)."""
    if candidate_a.run_id != candidate_b.run_id or candidate_a.pk == candidate_b.pk:
        raise _invalid("b", "Compare two different candidates of the same run.")
    if choice not in (PairOutcome.A, PairOutcome.B, PairOutcome.TIE):
        raise _invalid("choice", "Choose a, b or tie.")
    if not EvalResult.objects.filter(candidate=candidate_a, item_id=item_id).exists():
        raise _invalid("item", f"{candidate_a.label} has no answer for item {item_id}.")
    preference, _ = HumanPreference.objects.update_or_create(
        candidate_a=candidate_a,
        candidate_b=candidate_b,
        item_id=item_id,
        rater=rater,
        defaults={"choice": choice},
    )
    return preference
