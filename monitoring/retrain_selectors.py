"""Reads for retraining proposals: the project's proposals, what production serves per alias,
the approved examples a served version has not seen, the drift alerts open on an alias, and the
estimate of a proposed job, for the pages, the API and the checks (``monitoring.retraining``)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.shortcuts import get_object_or_404

from datasets.models import DatasetVersion, Example, ExampleStatus
from ftportal.errors import ApplicationError, PermissionDeniedError
from ftportal.models import Project
from ftportal.permissions import AnyUser, project_for
from ftportal.roles import Action, role_allows
from registry.models import Alias, ModelVersion, RegisteredModel
from training.estimates import LaunchEstimate, launch_estimate
from training.hyperparameters import config_for

from .models import (
    DRIFT_FIGURES,
    Alert,
    AlertKind,
    AlertState,
    ProposalState,
    RetrainProposal,
)
from .selectors import monitoring_settings_of


def project_for_retrain_decision(*, user: AnyUser, project_id: int) -> tuple[Project, str]:
    """The project, for a member who may decide on a proposal: deciding is
    ``Action.MANAGE_MONITORING``, and accepting launches training, so ``Action.TRAIN`` too
    (404 for non-members, 403 for a role without either)."""
    project, role = project_for(user=user, project_id=project_id, action=Action.MANAGE_MONITORING)
    if not role_allows(role, Action.TRAIN):
        raise PermissionDeniedError(
            f"Your role '{role}' in project '{project.name}' does not allow you to "
            f"{Action.TRAIN.label}."
        )
    return project, role


# --- the project's proposals ---------------------------------------------------------------------


def retrain_proposals_of(project: Project) -> QuerySet[RetrainProposal]:
    """The project's proposals, those waiting for a lead first, then newest first, with what
    the pages show of each."""
    waiting_first = Case(
        When(state=ProposalState.OPEN, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    return (
        RetrainProposal.objects.filter(project=project)
        .select_related(
            "registered_model",
            "served_version__registered_model",
            "dataset_version__dataset",
            "base_model",
            "decided_by",
            "training_job",
            "eval_run",
        )
        .order_by(waiting_first, "-created_at", "-id")
    )


def retrain_proposal_in_project(project: Project, proposal_id: int) -> RetrainProposal:
    """One proposal of the project; 404 for any other id (another project's included)."""
    return get_object_or_404(retrain_proposals_of(project), pk=proposal_id)


# --- what the checks read ------------------------------------------------------------------------


def served_version_of(registered_model: RegisteredModel, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at now, with its lineage; None when unset."""
    found = (
        Alias.objects.filter(registered_model=registered_model, name=alias)
        .select_related(
            "model_version__base_model__endpoint",
            "model_version__dataset_version__dataset",
            "model_version__registered_model",
        )
        .first()
    )
    return found.model_version if found else None


def examples_not_in(version: DatasetVersion) -> QuerySet[Example]:
    """The approved examples of the version's dataset that it does not hold: approved (or
    approved again) since it was frozen, or added since."""
    frozen = version.items.filter(example__isnull=False).values("example_id")
    return Example.objects.filter(
        dataset_id=version.dataset_id, status=ExampleStatus.APPROVED
    ).exclude(pk__in=frozen)


def latest_dataset_version(version: DatasetVersion) -> DatasetVersion:
    """The newest frozen training version of ``version``'s dataset (``version`` itself when
    newest): a held-out test set frozen from the same dataset is never proposed for training."""
    latest = DatasetVersion.objects.filter(
        dataset_id=version.dataset_id, is_test_set=False
    ).order_by("-number")
    return latest.first() or version


def open_drift_alerts(registered_model: RegisteredModel, alias: str) -> QuerySet[Alert]:
    """The drift rules' alerts on the alias that nobody resolved (and that did not resolve
    themselves), oldest first."""
    return (
        Alert.objects.filter(
            registered_model=registered_model,
            kind=AlertKind.RULE,
            rule__figure__in=DRIFT_FIGURES,
            rule__alias=alias,
        )
        .exclude(state=AlertState.RESOLVED)
        .select_related("rule")
        .order_by("first_raised_at", "id")
    )


def retrain_min_new_examples(project: Project) -> int:
    """How many new approved examples make a retrain worth proposing: the project's setting,
    else the setting's default."""
    return monitoring_settings_of(project.pk).retrain_min_new_examples


# --- what the proposed job would cost ------------------------------------------------------------


@dataclass(frozen=True)
class ProposalEstimate:
    """The launch estimate of the proposed job (training's own), on the data it names; when
    the examples are frozen only on accept, on the served version's data (``basis`` says so,
    and the job trains on more). ``error`` when the prefilled config is refused."""

    estimate: LaunchEstimate | None
    basis: str
    error: str = ""


def proposal_estimate(proposal: RetrainProposal) -> ProposalEstimate | None:
    """The estimate shown beside an open proposal; None once it is decided."""
    if proposal.state != ProposalState.OPEN:
        return None
    version = proposal.dataset_version
    basis = ""
    if version is None:
        version = proposal.served_version.dataset_version
        basis = (
            f"on {version}, the served version's data: the new examples are frozen in when "
            "the proposal is accepted, so the job trains on more"
        )
    else:
        basis = f"on {version}"
    try:
        stored = config_for(proposal.base_model.provider, proposal.hyperparameters)
    except ApplicationError as refused:
        return ProposalEstimate(estimate=None, basis=basis, error=refused.message)
    estimate = launch_estimate(
        version=version, base_model=proposal.base_model, hyperparameters=stored
    )
    return ProposalEstimate(estimate=estimate, basis=basis)
