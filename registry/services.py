"""Writes for the registry: register versions, move aliases, roll back."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from ftportal.errors import ApplicationError, ConflictError, PermissionDeniedError
from ftportal.models import Membership
from ftportal.roles import Action, role_allows
from training.models import Checkpoint, TrainingJob

from .gate import PromotionEvidence, evaluation_reader
from .models import (
    PRODUCTION_ALIAS,
    Alias,
    AliasChange,
    AliasChangeKind,
    ModelVersion,
    RegisteredModel,
)
from .selectors import previous_production, production_promotions_of, production_version

# A margin of the whole metric range would accept anything.
MAX_MARGIN_POINTS = 50


def model_version_register(
    *,
    job: TrainingJob,
    checkpoint: Checkpoint | None,
    adapter_dir: str = "",
    fine_tuned_model: str = "",
    train_loss: float | None = None,
    val_loss: float | None = None,
) -> ModelVersion:
    """Record a job's output (or one of its checkpoints) with its full lineage."""
    with transaction.atomic():
        registered, _ = RegisteredModel.objects.get_or_create(
            project=job.project, name=job.model_name
        )
        # Lock the model so concurrent registrations cannot share a version number.
        RegisteredModel.objects.select_for_update().get(pk=registered.pk)
        last = registered.versions.aggregate(last=Max("number"))["last"] or 0
        return ModelVersion.objects.create(
            registered_model=registered,
            number=last + 1,
            training_job=job,
            checkpoint=checkpoint,
            dataset_version=job.dataset_version,
            dataset_hash=job.dataset_version.content_hash,
            base_model=job.base_model,
            hyperparameters=job.hyperparameters,
            adapter_dir=adapter_dir,
            fine_tuned_model=fine_tuned_model,
            final_train_loss=train_loss,
            final_val_loss=val_loss,
        )


def model_version_register_checkpoint(*, checkpoint: Checkpoint) -> ModelVersion:
    """Register one of a job's checkpoints as a model version of the job's model."""
    if ModelVersion.objects.filter(checkpoint=checkpoint).exists():
        raise ConflictError(f"The checkpoint at step {checkpoint.step} is registered already.")
    if not checkpoint.path and not checkpoint.provider_model_id:
        raise ConflictError(f"The checkpoint at step {checkpoint.step} holds no model.")
    return model_version_register(
        job=checkpoint.job,
        checkpoint=checkpoint,
        adapter_dir=checkpoint.path,
        fine_tuned_model=checkpoint.provider_model_id,
        train_loss=checkpoint.train_loss,
        val_loss=checkpoint.val_loss,
    )


def _move_alias(
    *,
    registered_model: RegisteredModel,
    alias: str,
    to_version: ModelVersion,
    kind: AliasChangeKind,
    user: User,
    reason: str,
    evidence: PromotionEvidence | None = None,
    overridden: bool = False,
) -> AliasChange:
    current = (
        Alias.objects.select_for_update()
        .filter(registered_model=registered_model, name=alias)
        .first()
    )
    from_version = current.model_version if current else None
    if from_version == to_version:
        raise ConflictError(f"'{alias}' already points at version {to_version.number}.")
    Alias.objects.update_or_create(
        registered_model=registered_model, name=alias, defaults={"model_version": to_version}
    )
    return AliasChange.objects.create(
        registered_model=registered_model,
        alias=alias,
        kind=kind,
        from_version=from_version,
        to_version=to_version,
        changed_by=user,
        reason=reason,
        evidence=evidence.as_record() if evidence else {},
        overridden=overridden,
    )


def _required_reason(reason: str, what: str) -> str:
    cleaned = reason.strip()
    if not cleaned:
        raise ApplicationError(f"Give a reason for the {what}.", extra={"field": "reason"})
    return cleaned


def _checked_margin(margin_points: float) -> float:
    if not 0 <= margin_points <= MAX_MARGIN_POINTS:
        raise ApplicationError(
            f"The margin is between 0 and {MAX_MARGIN_POINTS} points of the metric.",
            extra={"field": "margin"},
        )
    return float(margin_points)


def promotion_evidence(
    *, model_version: ModelVersion, margin_points: float = 0.0
) -> PromotionEvidence:
    """What the gate knows about promoting this version now (for the confirmation page)."""
    return evaluation_reader().promotion_evidence(
        candidate=model_version,
        production=production_version(model_version.registered_model),
        margin_points=_checked_margin(margin_points),
    )


def _version_label(version: ModelVersion | None) -> str:
    return f"v{version.number}" if version is not None else "nothing"


def _locked_production(registered: RegisteredModel) -> ModelVersion | None:
    """What production serves, read under locks held till the end of the transaction: the
    model row (the alias row does not exist before the first promotion, so it alone cannot
    serialise two first promotions) and the alias row itself."""
    RegisteredModel.objects.select_for_update().get(pk=registered.pk)
    alias = (
        Alias.objects.select_for_update()
        .select_related("model_version")
        .filter(registered_model=registered, name=PRODUCTION_ALIAS)
        .first()
    )
    return alias.model_version if alias is not None else None


def _check_production_is_as_seen(
    current: ModelVersion | None, expected_current_version: int | None
) -> None:
    """Refuse a move decided on a page (or API read) that no longer shows what production
    serves: two people rolling back at once, or a double-clicked button, would otherwise both
    succeed and move production twice."""
    current_number = current.number if current is not None else None
    if current_number == expected_current_version:
        return
    seen = f"v{expected_current_version}" if expected_current_version else "nothing"
    raise ConflictError(
        f"Production moved to {_version_label(current)} since you loaded the page (you saw "
        f"{seen}); reload and decide again.",
        extra={
            "field": "expected_current_version",
            "current_version": current_number,
        },
    )


def model_version_promote(
    *,
    model_version: ModelVersion,
    user: User,
    reason: str,
    expected_current_version: int | None,
    margin_points: float = 0.0,
    override: bool = False,
) -> AliasChange:
    """Point production at this version, if a finished evaluation shows it better than (or no
    worse, by the lead's margin, than) what production serves now; the first promotion is
    weighed against the version's base model. An admin may override a refusal; the history
    keeps the evidence, the reason and the override either way.

    ``expected_current_version`` is the number of the version the user saw in production (None:
    the alias was unset); a 409 when production has moved since."""
    reason = _required_reason(reason, "promotion")
    registered = model_version.registered_model
    with transaction.atomic():
        current = _locked_production(registered)
        _check_production_is_as_seen(current, expected_current_version)
        if current == model_version:
            raise ConflictError(
                f"'{PRODUCTION_ALIAS}' already points at version {model_version.number}."
            )
        # Read under the lock: the evidence is about the version production serves right now.
        evidence = promotion_evidence(model_version=model_version, margin_points=margin_points)
        overridden = False
        if not evidence.allows_promotion:
            if not override:
                raise ConflictError(_refusal(evidence), extra={"evidence": evidence.as_record()})
            _check_may_override(registered, user)
            overridden = True
        return _move_alias(
            registered_model=registered,
            alias=PRODUCTION_ALIAS,
            to_version=model_version,
            kind=AliasChangeKind.PROMOTE,
            user=user,
            reason=reason,
            evidence=evidence,
            overridden=overridden,
        )


def _refusal(evidence: PromotionEvidence) -> str:
    if evidence.missing:
        return evidence.missing
    return (
        f"{evidence.candidate} is {evidence.verdict} compared with {evidence.baseline} "
        f"in evaluation {evidence.eval_run_id} ({evidence.sentence}); the margin is "
        f"{evidence.margin_points:g} points. Promotion needs a verdict of better or no worse "
        "than the margin."
    )


def _check_may_override(registered: RegisteredModel, user: User) -> None:
    role = (
        Membership.objects.filter(project_id=registered.project_id, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )
    if not role_allows(role, Action.OVERRIDE_PROMOTION_GATE):
        raise PermissionDeniedError(
            f"Your role '{role}' does not allow you to "
            f"{Action.OVERRIDE_PROMOTION_GATE.label}: only an admin may override it."
        )


def rollback_target(registered_model: RegisteredModel) -> ModelVersion | None:
    """The version production pointed at before the current version was promoted."""
    production = production_version(registered_model)
    if production is None:
        return None
    latest = production_promotions_of(registered_model).filter(to_version=production)[:1]
    return previous_production(production, latest)


def production_rollback(
    *,
    registered_model: RegisteredModel,
    user: User,
    reason: str,
    expected_current_version: int | None,
    target_version: int,
) -> AliasChange:
    """Move production back to the version it served before the current one. The caller says
    what it saw: production at ``expected_current_version`` and the button's target
    ``target_version``; a 409 when either has changed since, so a second click (or a second
    person) cannot roll back one step further than they meant."""
    reason = _required_reason(reason, "rollback")
    with transaction.atomic():
        current = _locked_production(registered_model)
        _check_production_is_as_seen(current, expected_current_version)
        target = rollback_target(registered_model)
        if target is None:
            raise ConflictError(
                f"'{registered_model.name}' has no earlier production version to roll back to."
            )
        if target.number != target_version:
            raise ConflictError(
                f"A rollback now goes to v{target.number}, not v{target_version} as the page "
                "you loaded said; reload and decide again.",
                extra={"field": "target_version", "target_version": target.number},
            )
        return _move_alias(
            registered_model=registered_model,
            alias=PRODUCTION_ALIAS,
            to_version=target,
            kind=AliasChangeKind.ROLLBACK,
            user=user,
            reason=reason,
        )
