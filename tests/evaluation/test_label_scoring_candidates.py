"""Local candidates that answer by ranking the evaluated version's label set by likelihood.

The runner stores the likeliest label as the answer and its probability among the labels as the
result's confidence; what may ask for it (local models, label-set contracts) is checked when the
run is created, each refusal naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.models import BaseModel
from evaluation.models import CandidateKind, EvalRun, EvalStatus
from evaluation.runner import eval_run_execute
from evaluation.services import CandidateSpec
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from tests.evaluation.test_runs import held_out_version, run_of
from tests.factories import fake_endpoint

# Long labels, shared prefixes and odd characters: what a real label set looks like.
LABELS = [
    "billing",
    "billing / refund",
    'feature request: "dark mode"',
    "bug report: crash on start-up after the 4.2 update on Android tablets",
    "compte bloqué",
    "<script>alert(1)</script>",
]
CONTRACT: dict[str, Any] = {"kind": "label_set", "labels": LABELS}


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def _labelled_version(project: Project, lead: User) -> Any:
    version = held_out_version(project, lead)
    version.answer_contract = CONTRACT
    version.save(update_fields=["answer_contract"])
    return version


def test_a_label_scoring_candidate_answers_with_a_label_and_its_confidence(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = _labelled_version(project, lead)
    run = run_of(
        project,
        lead,
        version,
        CandidateSpec(
            kind=CandidateKind.BASE, base_model=base_model, label_scoring=True, abstain_below=0.5
        ),
    )

    finished = eval_run_execute(run_id=run.pk)

    assert finished is not None and finished.status == EvalStatus.SUCCEEDED, finished
    candidate = run.candidates.get()
    assert candidate.label_scoring and candidate.abstain_below == 0.5
    assert candidate.label == "SmolLM2-135M-Instruct (zero-shot), ranking labels by likelihood"
    results = list(candidate.results.all())
    assert len(results) == 6
    assert [r.output for r in results if r.output not in LABELS] == []
    confidences = [r.confidence for r in results]
    assert all(c is not None and 1 / len(LABELS) <= c <= 1 for c in confidences), confidences
    # A label scored as an answer: each counts as its own prompt and label tokens.
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)


def test_label_scoring_needs_a_label_set_contract(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = held_out_version(project, lead)
    version.answer_contract = {"kind": "regex", "pattern": "[a-z]+"}
    version.save(update_fields=["answer_contract"])

    with pytest.raises(ApplicationError) as refused:
        run_of(
            project,
            lead,
            version,
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, label_scoring=True),
        )

    assert refused.value.extra["field"] == "candidates[0].label_scoring"
    assert "no label-set answer contract" in str(refused.value)
    assert not EvalRun.objects.exists()


def test_a_hosted_candidate_cannot_rank_labels(project: Project, lead: User) -> None:
    version = _labelled_version(project, lead)

    with pytest.raises(ApplicationError) as refused:
        run_of(
            project,
            lead,
            version,
            CandidateSpec(
                kind=CandidateKind.OPENAI_COMPATIBLE,
                api_model="gpt-4o-mini",
                endpoint=fake_endpoint("http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY"),
                label_scoring=True,
            ),
        )

    assert refused.value.extra["field"] == "candidates[0].label_scoring"
    assert "Only local models" in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"abstain_below": 0.5}, "abstain_below", "needs label scoring"),
        ({"label_scoring": True, "abstain_below": 1.0}, "abstain_below", "between 0 and 1"),
        ({"label_scoring": True, "abstain_below": 0.0}, "abstain_below", "between 0 and 1"),
        ({"label_scoring": True, "constrained": True}, "label_scoring", "not both"),
    ],
)
def test_abstaining_and_mixing_modes_are_checked(
    project: Project,
    lead: User,
    base_model: BaseModel,
    changes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    version = _labelled_version(project, lead)

    with pytest.raises(ApplicationError, match=message) as refused:
        run_of(
            project,
            lead,
            version,
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, **changes),
        )

    assert refused.value.extra["field"] == f"candidates[0].{field}"


def test_the_api_takes_and_returns_label_scoring(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = _labelled_version(project, lead)
    client = APIClient()
    client.force_authenticate(lead)
    url = f"/api/projects/{project.pk}/evaluations/"
    candidate = {"kind": "base", "base_model": base_model.key, "label_scoring": True}

    refused = client.post(
        url,
        {"dataset_version": version.pk, "candidates": [candidate | {"abstain_below": 2}]},
        format="json",
    )
    created = client.post(
        url,
        {"dataset_version": version.pk, "candidates": [candidate | {"abstain_below": 0.3}]},
        format="json",
    )

    assert refused.status_code == 400, refused.content
    assert "abstain_below" in refused.content.decode()
    assert created.status_code == 201, created.content
    (returned,) = created.json()["candidates"]
    assert returned["label_scoring"] is True
    assert returned["abstain_below"] == 0.3
