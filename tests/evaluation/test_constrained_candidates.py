"""Local candidates whose decoding is constrained to the evaluated version's answer contract.

The contract is read through evaluation.contracts.contract_for_run (the dataset version's
answer_contract); where a test needs a contract on a version, it sets it there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from evaluation.models import CandidateKind, EvalRun, EvalStatus
from evaluation.runner import eval_run_execute
from evaluation.services import CandidateSpec
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from tests.evaluation.test_runs import held_out_version, run_of
from tests.factories import fake_endpoint

LABELS = ["billing", "bug", "feature request", "account"]
CONTRACT: dict[str, Any] = {"kind": "label_set", "labels": LABELS}


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def test_constraining_a_version_without_a_contract_is_refused_naming_the_field(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = held_out_version(project, lead)

    with pytest.raises(ApplicationError) as refused:
        run_of(
            project,
            lead,
            version,
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model),
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, constrained=True),
        )

    assert refused.value.extra["field"] == "candidates[1].constrained"
    assert "has no answer contract" in str(refused.value)
    assert not EvalRun.objects.exists()


def test_a_hosted_candidate_cannot_be_constrained(project: Project, lead: User) -> None:
    version = held_out_version(project, lead)
    version.answer_contract = CONTRACT
    version.save(update_fields=["answer_contract"])

    with pytest.raises(ApplicationError) as refused:
        run_of(
            project,
            lead,
            version,
            CandidateSpec(
                kind=CandidateKind.OPENAI_COMPATIBLE,
                api_model="gpt-4o-mini",
                endpoint=fake_endpoint("http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY"),
                constrained=True,
            ),
        )

    assert refused.value.extra["field"] == "candidates[0].constrained"
    assert "Only local models" in str(refused.value)


def test_a_contract_that_cannot_constrain_is_refused_with_what_is_wrong(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = held_out_version(project, lead)
    version.answer_contract = {"kind": "label_set", "labels": []}

    with pytest.raises(ApplicationError, match="non-empty list of labels"):
        run_of(
            project,
            lead,
            version,
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, constrained=True),
        )


def test_a_constrained_local_candidate_answers_only_with_the_contracts_labels(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = held_out_version(project, lead)
    version.answer_contract = CONTRACT
    version.save(update_fields=["answer_contract"])
    run = run_of(
        project,
        lead,
        version,
        CandidateSpec(kind=CandidateKind.BASE, base_model=base_model),
        CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, constrained=True),
    )

    finished = eval_run_execute(run_id=run.pk)

    assert finished is not None and finished.status == EvalStatus.SUCCEEDED, finished
    plain, constrained = run.candidates.all()
    assert not plain.constrained and constrained.constrained
    assert constrained.label == "SmolLM2-135M-Instruct (zero-shot), constrained to contract"
    assert plain.label == "SmolLM2-135M-Instruct (zero-shot)"
    outputs = list(constrained.results.values_list("output", flat=True))
    assert len(outputs) == 6
    assert [output for output in outputs if output not in LABELS] == []
    # The unconstrained twin answers freely (the questions ask nothing about labels).
    assert any(output not in LABELS for output in plain.results.values_list("output", flat=True))
