"""The new-evaluation form: plain POST fields turned into the service's candidate specs.

Candidate order is the verdicts' order: the first chosen model version is the reference that
every other candidate is compared with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.http import QueryDict

from catalog.models import Endpoint
from catalog.selectors import base_model_by_key, endpoint_named
from datasets.models import DatasetVersion
from datasets.selectors import dataset_versions_of
from ftportal.errors import ApplicationError
from ftportal.models import Project
from registry.selectors import model_versions_of

from .judge import DEFAULT_JUDGE_MAX_NEW_TOKENS
from .models import CandidateKind, EvalSplit, Prompting
from .services import CandidateSpec, JudgeSpec, hosted_kind_of


@dataclass(frozen=True)
class NewEvaluation:
    dataset_version: DatasetVersion
    split: EvalSplit
    candidates: list[CandidateSpec]
    max_new_tokens: int
    primary_metric: str
    regex_check: str
    contains_check: str
    judge: JudgeSpec | None


def _bad(field: str, message: str) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", extra={"field": field})


def whole_number(
    data: QueryDict, field: str, *, default: int | None = None, most: int | None = None
) -> int:
    """A whole number from a form or query; blank takes ``default`` (required when None).
    With ``most``, it must be between 1 and that. ApplicationError names the field."""
    raw = (data.get(field) or "").strip()
    if not raw and default is not None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(field, f"a whole number, not {raw!r}") from None
    if most is not None and not 1 <= value <= most:
        raise _bad(field, f"between 1 and {most:,}")
    return value


def _price(data: QueryDict, field: str) -> Decimal | None:
    raw = (data.get(field) or "").strip()
    if not raw:
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise _bad(field, f"a price in US dollars per million tokens, not {raw!r}") from None


def _model_versions(project: Project, data: QueryDict) -> list[CandidateSpec]:
    ids = [_as_id(raw, "model_versions") for raw in data.getlist("model_versions")]
    found = {v.pk: v for v in model_versions_of(project).filter(pk__in=ids)}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise _bad("model_versions", f"no model version {missing[0]} in this project")
    plain = [CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=found[pk]) for pk in ids]
    specs = list(plain)
    if data.get("versions_constrained"):
        # Each version again, constrained: the pair shows what the contract changes.
        specs += [dataclasses.replace(spec, constrained=True) for spec in plain]
    if data.get("versions_label_scoring"):
        # And ranking the labels by likelihood, with the confidence to abstain below.
        abstain = _abstain_below(data)
        specs += [
            dataclasses.replace(spec, label_scoring=True, abstain_below=abstain) for spec in plain
        ]
    return specs


def _abstain_below(data: QueryDict) -> float | None:
    raw = (data.get("abstain_below") or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise _bad("abstain_below", f"a confidence between 0 and 1, not {raw!r}") from None


def _as_id(raw: str, field: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _bad(field, f"not an id: {raw!r}") from None


def _shots_version(project: Project, data: QueryDict) -> DatasetVersion | None:
    """Where few-shot examples are drawn from: a training version's train split; blank is the
    evaluated version's own (refused by the service when that is a held-out test set)."""
    raw = (data.get("shots_version") or "").strip()
    if not raw:
        return None
    version_id = _as_id(raw, "shots_version")
    version = dataset_versions_of(project).filter(pk=version_id, is_test_set=False).first()
    if version is None:
        raise _bad("shots_version", f"no training dataset version {version_id} in this project")
    return version


def _base_candidates(project: Project, data: QueryDict) -> list[CandidateSpec]:
    key = (data.get("base_model") or "").strip()
    if not key:
        return []
    base = base_model_by_key(key)
    if base is None:
        raise _bad("base_model", f"no base model {key!r} in the catalog")
    specs = []
    if data.get("base_zero_shot"):
        specs.append(CandidateSpec(kind=CandidateKind.BASE, base_model=base))
    if data.get("base_constrained"):
        specs.append(CandidateSpec(kind=CandidateKind.BASE, base_model=base, constrained=True))
    if data.get("base_label_scoring"):
        specs.append(CandidateSpec(kind=CandidateKind.BASE, base_model=base, label_scoring=True))
    shots = whole_number(data, "few_shot_k", default=0)
    if shots:
        specs.append(
            CandidateSpec(
                kind=CandidateKind.BASE,
                base_model=base,
                prompting=Prompting.FEW_SHOT,
                few_shot_k=shots,
                few_shot_seed=whole_number(data, "few_shot_seed", default=0),
                shots_version=_shots_version(project, data),
            )
        )
    return specs


def _endpoint(data: QueryDict, field: str) -> Endpoint | None:
    """The registered endpoint the form picked (by name), or None for none."""
    name = (data.get(field) or "").strip()
    if not name:
        return None
    endpoint = endpoint_named(name)
    if endpoint is None:
        raise _bad(field, f"no endpoint {name!r}; an admin registers endpoints")
    return endpoint


def _external_candidate(project: Project, data: QueryDict) -> list[CandidateSpec]:
    endpoint = _endpoint(data, "external_endpoint")
    if endpoint is None:
        return []
    shots = whole_number(data, "external_few_shot_k", default=0)
    return [
        CandidateSpec(
            kind=hosted_kind_of(endpoint),
            api_model=data.get("external_model", ""),
            endpoint=endpoint,
            system_prompt=data.get("external_system_prompt", ""),
            user_template=data.get("external_user_template") or "{input}",
            prompting=Prompting.FEW_SHOT if shots else Prompting.ZERO_SHOT,
            few_shot_k=shots,
            shots_version=_shots_version(project, data) if shots else None,
            input_usd_per_million_tokens=_price(data, "external_input_price"),
            output_usd_per_million_tokens=_price(data, "external_output_price"),
        )
    ]


# The judge select's value for "a hosted model at the endpoint chosen below".
JUDGE_AT_ENDPOINT = "endpoint"


def _judge(data: QueryDict) -> JudgeSpec | None:
    choice = (data.get("judge_kind") or "").strip()
    if not choice:
        return None
    if choice not in (CandidateKind.BASE, JUDGE_AT_ENDPOINT):
        raise _bad("judge_kind", "a local catalog model or a model at a registered endpoint")
    endpoint = _endpoint(data, "judge_endpoint") if choice == JUDGE_AT_ENDPOINT else None
    if choice == JUDGE_AT_ENDPOINT and endpoint is None:
        raise _bad("judge_endpoint", "pick the endpoint that serves the judge")
    return JudgeSpec(
        kind=hosted_kind_of(endpoint) if endpoint is not None else CandidateKind.BASE,
        model=data.get("judge_model", ""),
        endpoint=endpoint,
        rubric=data.get("judge_rubric", ""),
        max_new_tokens=whole_number(
            data, "judge_max_new_tokens", default=DEFAULT_JUDGE_MAX_NEW_TOKENS
        ),
        input_usd_per_million_tokens=_price(data, "judge_input_price"),
        output_usd_per_million_tokens=_price(data, "judge_output_price"),
    )


def new_evaluation_from(project: Project, data: QueryDict) -> NewEvaluation:
    """Read the form; ApplicationError names the first field that is wrong. References to
    other projects' objects read as missing."""
    version_id = _as_id(data.get("dataset_version") or "", "dataset_version")
    version = dataset_versions_of(project).filter(pk=version_id).first()
    if version is None:
        raise _bad("dataset_version", f"no dataset version {version_id} in this project")
    split = data.get("split") or EvalSplit.VALIDATION
    if split not in EvalSplit.values:
        raise _bad("split", "the validation split or every item")
    return NewEvaluation(
        dataset_version=version,
        split=EvalSplit(split),
        candidates=[
            *_model_versions(project, data),
            *_base_candidates(project, data),
            *_external_candidate(project, data),
        ],
        max_new_tokens=whole_number(data, "max_new_tokens", default=64),
        primary_metric=data.get("primary_metric") or "exact_match",
        regex_check=data.get("regex_check", ""),
        contains_check=data.get("contains_check", ""),
        judge=_judge(data),
    )
