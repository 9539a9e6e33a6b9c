"""The answer contract an evaluation reads, and the decoding constraint made from it."""

from __future__ import annotations

from typing import Any

from datasets.contracts import LABEL_SET
from datasets.models import DatasetVersion
from providers.base import AnswerConstraint, ProviderError

from .models import Candidate, EvalRun


def contract_of(version: DatasetVersion) -> dict[str, Any]:
    """The dataset version's answer contract (copied from its dataset when it was frozen), or
    ``{}`` for none. The one place evaluation reads it."""
    return dict(version.answer_contract or {})


def contract_for_run(run: EvalRun) -> dict[str, Any]:
    return contract_of(run.dataset_version)


def constraint_for(candidate: Candidate) -> AnswerConstraint | None:
    """What the candidate's generation is constrained to: its run's contract when the
    candidate asked for it, else nothing."""
    if not candidate.constrained:
        return None
    return AnswerConstraint.from_contract(contract_for_run(candidate.run))


def scored_labels(candidate: Candidate) -> list[str] | None:
    """The labels a label-scoring candidate ranks: its run's label-set contract's; None for a
    candidate that generates."""
    if not candidate.label_scoring:
        return None
    contract = contract_for_run(candidate.run)
    if contract.get("kind") != LABEL_SET:
        raise ProviderError(
            f"{candidate.label}: label scoring needs a label-set answer contract on "
            f"{candidate.run.dataset_version}"
        )
    return list(contract["labels"])
