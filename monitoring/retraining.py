"""Retraining proposals (issue 17): when enough approved examples arrived since the served
version's data, when drift is alerted on its alias, or when its base model goes away, the
product proposes a retrain: a pre-filled training job and the evaluation that will gate it
(``monitoring.retrain_prefill``), waiting for a lead. Nothing is launched or spent before a
lead accepts it; accepting launches the job through training's own launch (its checks, the
budget's hard cap included), and once the job's version is registered the gating evaluation is
queued (``retrain_followups_run``).

One open proposal per alias: checking again adds reasons and refreshes the prefill. A decided
(accepted or dismissed) proposal's reasons are not proposed again for the same served version:
only a new reason is (another drift alert, another end of the base model, or as many new
approved examples again as the project's threshold)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from datasets.models import DatasetVersion
from datasets.services import dataset_version_freeze
from evaluation.models import CandidateKind, EvalRun, EvalSplit
from evaluation.services import CandidateSpec, eval_run_create
from ftportal.errors import ApplicationError, ConflictError
from registry.models import PRODUCTION_ALIAS, ModelVersion, RegisteredModel
from training.services import training_job_launch

from .alerts import AlertRaise, alert_clear, alert_raise
from .models import AlertKind, ProposalState, RetrainProposal, Severity
from .retrain_prefill import (
    Prefill,
    event_key,
    event_words,
    prefill_for,
    proposed_dataset_version,
    served_base_endings,
)
from .retrain_selectors import (
    examples_not_in,
    open_drift_alerts,
    retrain_min_new_examples,
    served_version_of,
)
from .selectors import production_aliases

logger = logging.getLogger(__name__)

NEW_EXAMPLES = "new_examples"
DRIFT = "drift"
BASE_RETIRING = "base_retiring"
REASON_ORDER = (NEW_EXAMPLES, DRIFT, BASE_RETIRING)
MAX_NOTE_CHARS = 2000
# A proposal's alert is raised again only when a new kind of reason joins it; its e-mail and
# webhook go out at most once a day.
ALERT_COOLDOWN = dt.timedelta(days=1)

Reason = dict[str, Any]


def proposal_alert_key(proposal: RetrainProposal) -> str:
    return f"retrain:{proposal.pk}"


def _followup_alert_key(proposal_id: int) -> str:
    return f"retrain:{proposal_id}:evaluation"


# --- why: each reason with what it stands on -----------------------------------------------------


def _decided_reasons(served: ModelVersion, alias: str) -> list[Reason]:
    """The reasons of the proposals a lead decided for this served version and alias."""
    decided = RetrainProposal.objects.filter(
        registered_model_id=served.registered_model_id,
        alias=alias,
        served_version=served,
        state__in=(ProposalState.ACCEPTED, ProposalState.DISMISSED),
    ).values_list("reasons", flat=True)
    return [reason for reasons in decided for reason in reasons]


def _seen(decided: Iterable[Reason], kind: str, key: str) -> set[Any]:
    return {value for reason in decided if reason["kind"] == kind for value in reason.get(key, [])}


def _new_examples_reason(served: ModelVersion, decided: list[Reason]) -> Reason | None:
    """Enough approved examples the served version was not trained on: the project's
    threshold, counted again from the count of the last decided proposal."""
    threshold = retrain_min_new_examples(served.registered_model.project)
    count = examples_not_in(served.dataset_version).count()
    before = max(
        (reason.get("count", 0) for reason in decided if reason["kind"] == NEW_EXAMPLES),
        default=0,
    )
    if count - before < threshold:
        return None
    data = served.dataset_version
    return {
        "kind": NEW_EXAMPLES,
        "text": f"{count} approved examples of {data.dataset.name} are not in {data}, the data "
        f"{served} was trained on (this project proposes a retrain from {threshold}).",
        "count": count,
    }


def _drift_reason(served: ModelVersion, alias: str, decided: list[Reason]) -> Reason | None:
    """A drift rule's alert open on the alias that no decided proposal answered."""
    alerts = list(open_drift_alerts(served.registered_model, alias))
    seen = _seen(decided, DRIFT, "alert_ids")
    if not [alert for alert in alerts if alert.pk not in seen]:
        return None
    titles = "; ".join(alert.title for alert in alerts[:3])
    more = f" and {len(alerts) - 3} more" if len(alerts) > 3 else ""
    return {
        "kind": DRIFT,
        "text": f"Drift is alerted on {served.registered_model.name}/{alias}: {titles}{more}.",
        "alert_ids": [alert.pk for alert in alerts],
    }


def _retiring_reason(served: ModelVersion, today: dt.date, decided: list[Reason]) -> Reason | None:
    """An end of the served version's base model within the horizon not decided on yet."""
    endings = served_base_endings(served, today)
    seen = _seen(decided, BASE_RETIRING, "events")
    if not [ending for ending in endings if event_key(ending) not in seen]:
        return None
    words = "; ".join(event_words(ending) for ending in endings)
    return {
        "kind": BASE_RETIRING,
        "text": f"The base model of {served} is going away: {words}.",
        "events": [event_key(ending) for ending in endings],
    }


def retrain_reasons(served: ModelVersion, alias: str, today: dt.date) -> list[Reason]:
    """Why ``served`` should be retrained now, leaving out what a lead decided on already."""
    decided = _decided_reasons(served, alias)
    found = (
        _new_examples_reason(served, decided),
        _drift_reason(served, alias, decided),
        _retiring_reason(served, today, decided),
    )
    return [reason for reason in found if reason is not None]


def _merged(old: list[Reason], new: list[Reason]) -> tuple[list[Reason], bool]:
    """``old`` with ``new``'s reasons replacing those of their kind, in REASON_ORDER; and
    whether a kind was added."""
    by_kind = {reason["kind"]: reason for reason in old}
    added = any(reason["kind"] not in by_kind for reason in new)
    by_kind.update({reason["kind"]: reason for reason in new})
    ordered = sorted(by_kind.values(), key=lambda reason: REASON_ORDER.index(reason["kind"]))
    return ordered, added


def _with_base_note(reasons: list[Reason], note: str) -> list[Reason]:
    """Why the proposed base model is another one, said in the reason that asks for it (the
    base model's end, else the last reason); once."""
    if not note or any(note in reason["text"] for reason in reasons):
        return reasons
    kinds = [reason["kind"] for reason in reasons]
    at = kinds.index(BASE_RETIRING) if BASE_RETIRING in kinds else len(reasons) - 1
    noted = {**reasons[at], "text": f"{reasons[at]['text']} {note}"}
    return [*reasons[:at], noted, *reasons[at + 1 :]]


# --- proposing -----------------------------------------------------------------------------------


def _open_proposal(registered_model: RegisteredModel, alias: str) -> RetrainProposal | None:
    return (
        RetrainProposal.objects.select_for_update()
        .filter(registered_model=registered_model, alias=alias, state=ProposalState.OPEN)
        .first()
    )


def _supersede(proposal: RetrainProposal, served: ModelVersion | None, now: dt.datetime) -> None:
    """The alias moved since ``proposal`` was made: it no longer proposes anything."""
    serving = f"now serves {served}" if served else "serves nothing now"
    proposal.state = ProposalState.SUPERSEDED
    proposal.decided_at = now
    proposal.decision_note = f"{proposal.alias} {serving}; a new check proposes for that."
    proposal.save(update_fields=["state", "decided_at", "decision_note", "updated_at"])
    alert_clear(
        project_id=proposal.project_id,
        key=proposal_alert_key(proposal),
        resolution=proposal.decision_note,
        now=now,
    )


def _proposal_write(
    proposal: RetrainProposal | None,
    served: ModelVersion,
    alias: str,
    reasons: list[Reason],
    prefill: Prefill,
) -> tuple[RetrainProposal, bool]:
    """Create the alias's open proposal or update it; and whether a kind of reason was added."""
    merged, added = _merged(proposal.reasons if proposal else [], reasons)
    fields = {
        "reasons": _with_base_note(merged, prefill.base_note),
        "dataset_version": prefill.dataset_version,
        "base_model": prefill.base_model,
        "hyperparameters": prefill.hyperparameters,
        "evaluation_plan": prefill.evaluation_plan,
    }
    if proposal is None:
        created = RetrainProposal.objects.create(
            project_id=served.registered_model.project_id,
            registered_model=served.registered_model,
            alias=alias,
            served_version=served,
            **fields,
        )
        return created, True
    for name, value in fields.items():
        setattr(proposal, name, value)
    proposal.save()
    return proposal, added


def _proposal_alert(proposal: RetrainProposal, now: dt.datetime) -> None:
    kinds = {reason["kind"] for reason in proposal.reasons}
    alert_raise(
        AlertRaise(
            project_id=proposal.project_id,
            kind=AlertKind.RETRAIN,
            key=proposal_alert_key(proposal),
            title=f"Retraining proposed for {proposal.registered_model.name}/{proposal.alias}",
            message=" ".join(reason["text"] for reason in proposal.reasons),
            severity=Severity.WARNING if kinds - {NEW_EXAMPLES} else Severity.INFO,
            registered_model_id=proposal.registered_model_id,
            model_version_id=proposal.served_version_id,
            cooldown=ALERT_COOLDOWN,
        ),
        now=now,
    )


def retrain_check(
    *,
    registered_model: RegisteredModel,
    alias: str = PRODUCTION_ALIAS,
    now: dt.datetime | None = None,
) -> RetrainProposal | None:
    """Propose a retrain of what ``alias`` serves when there is a reason to: create the open
    proposal (and its alert) or add the new reasons to it and refresh its prefill. Answers the
    alias's open proposal, or None when nothing is proposed. Checking twice makes one."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    with transaction.atomic():
        # Locked: the hourly check and another one of the same model at once must make one
        # proposal, and must not supersede what the other just made.
        RegisteredModel.objects.select_for_update().get(pk=registered_model.pk)
        served = served_version_of(registered_model, alias)
        proposal = _open_proposal(registered_model, alias)
        if proposal is not None and (served is None or proposal.served_version_id != served.pk):
            _supersede(proposal, served, now)
            proposal = None
        if served is None:
            return None
        reasons = retrain_reasons(served, alias, today)
        if proposal is None and not reasons:
            return None
        prefill = prefill_for(served, alias, today)
        if prefill is None:
            logger.warning("no base model takes a job: no retrain proposed for %s", served)
            return proposal
        proposal, added = _proposal_write(proposal, served, alias, reasons, prefill)
        if added:
            _proposal_alert(proposal, now)
    return proposal


def retrain_checks_run(now: dt.datetime | None = None) -> int:
    """Check every registered model's production alias; the open proposals after it. One
    model's failure is logged and the others are still checked."""
    proposed = 0
    for alias in production_aliases():
        try:
            found = retrain_check(
                registered_model=alias.registered_model, alias=alias.name, now=now
            )
        except Exception:
            logger.exception("retrain check of %s failed", alias.registered_model)
            continue
        proposed += found is not None
    return proposed


# --- a lead deciding -----------------------------------------------------------------------------


def _locked_open(proposal: RetrainProposal) -> RetrainProposal:
    locked = (
        RetrainProposal.objects.select_for_update(of=("self",))
        .select_related("project", "registered_model", "served_version", "base_model")
        .get(pk=proposal.pk)
    )
    if locked.state != ProposalState.OPEN:
        raise ConflictError(f"This proposal is {locked.get_state_display().lower()} already.")
    return locked


def _job_data(proposal: RetrainProposal, user: User) -> DatasetVersion:
    """The dataset version the job trains on: the proposal's, else the latest when it now
    holds every approved example, else those examples frozen now (with the served data's seed
    and validation share, the split carried over)."""
    if proposal.dataset_version is not None:
        return proposal.dataset_version
    found = proposed_dataset_version(proposal.served_version)
    if found is not None:
        return found
    served_data = proposal.served_version.dataset_version
    return dataset_version_freeze(
        dataset=served_data.dataset,
        user=user,
        seed=served_data.seed,
        validation_fraction=served_data.validation_fraction,
        note=f"Frozen for retraining proposal {proposal.pk} "
        f"({proposal.registered_model.name}/{proposal.alias}).",
    )


def retrain_accept(
    *, proposal: RetrainProposal, user: User, now: dt.datetime | None = None
) -> RetrainProposal:
    """Launch the proposed job as ``user`` through training's own launch: its refusals (a
    base model that takes no jobs, the budget's hard cap) are the launch's errors, and the
    proposal stays open, nothing frozen or launched. 409 unless the proposal is open and the
    alias still serves the version it was made for."""
    now = now or timezone.now()
    with transaction.atomic():
        # Locked: two leads accepting at once must launch one job.
        locked = _locked_open(proposal)
        served = served_version_of(locked.registered_model, locked.alias)
        if served is None or served.pk != locked.served_version_id:
            raise ConflictError(
                f"{locked.alias} no longer serves {locked.served_version}; the next check "
                "proposes a retrain of what it serves now."
            )
        data = _job_data(locked, user)
        job = training_job_launch(
            project=locked.project,
            dataset_version=data,
            base_model=locked.base_model,
            user=user,
            idempotency_key="",
            hyperparameters=locked.hyperparameters,
            model_name=locked.registered_model.name,
        ).obj
        locked.dataset_version = data
        locked.evaluation_plan = {
            **locked.evaluation_plan,
            "dataset_version_id": data.pk,
            "dataset_version": str(data),
        }
        locked.training_job = job
        _decided(locked, user, ProposalState.ACCEPTED, now)
        alert_clear(
            project_id=locked.project_id,
            key=proposal_alert_key(locked),
            resolution=f"Accepted by {user.get_username()}: training job {job.pk}.",
            now=now,
        )
    return locked


def retrain_dismiss(
    *, proposal: RetrainProposal, user: User, note: str = "", now: dt.datetime | None = None
) -> RetrainProposal:
    """Decline the proposal, with an optional note; its reasons are not proposed again for
    this served version. 409 unless it is open."""
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise ApplicationError(
            f"note: {len(note)} characters, over the limit of {MAX_NOTE_CHARS}.",
            extra={"field": "note"},
        )
    now = now or timezone.now()
    with transaction.atomic():
        # Locked: a lead accepting at the same moment must find it dismissed, or win.
        locked = _locked_open(proposal)
        locked.decision_note = note
        _decided(locked, user, ProposalState.DISMISSED, now)
        said = f": {note}" if note else ""
        alert_clear(
            project_id=locked.project_id,
            key=proposal_alert_key(locked),
            resolution=f"Dismissed by {user.get_username()}{said}",
            now=now,
        )
    return locked


def _decided(proposal: RetrainProposal, user: User, state: ProposalState, now: dt.datetime) -> None:
    proposal.state = state
    proposal.decided_by = user
    proposal.decided_at = now
    proposal.save()


# --- after the job: the gating evaluation --------------------------------------------------------


def _trained_version(proposal: RetrainProposal) -> ModelVersion | None:
    """The version the accepted job registered first (the keeper's, when the job succeeded)."""
    return (
        ModelVersion.objects.filter(training_job_id=proposal.training_job_id)
        .select_related("registered_model", "base_model", "dataset_version__dataset")
        .order_by("number")
        .first()
    )


def _gating_run(proposal: RetrainProposal, version: ModelVersion, user: User) -> EvalRun:
    plan = proposal.evaluation_plan
    served = proposal.served_version
    return eval_run_create(
        project=proposal.project,
        dataset_version=version.dataset_version,
        candidates=[
            CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=version),
            CandidateSpec(
                kind=CandidateKind.MODEL_VERSION,
                model_version=served,
                label=f"{served} ({proposal.alias})",
            ),
        ],
        user=user,
        split=EvalSplit(plan.get("split", EvalSplit.VALIDATION)),
        max_new_tokens=int(plan.get("max_new_tokens", 64)),
        primary_metric=str(plan.get("primary_metric", "exact_match")),
        regex_check=str(plan.get("regex_check", "")),
        contains_check=str(plan.get("contains_check", "")),
    )


def _followup(proposal_id: int, now: dt.datetime) -> EvalRun | None:
    with transaction.atomic():
        # Locked, and skipped while another run of the task holds it: one gating evaluation.
        proposal = (
            RetrainProposal.objects.select_for_update(skip_locked=True)
            .filter(pk=proposal_id, state=ProposalState.ACCEPTED, eval_run__isnull=True)
            .first()
        )
        if proposal is None or proposal.decided_by is None:
            return None
        version = _trained_version(proposal)
        if version is None:
            return None
        run = _gating_run(proposal, version, proposal.decided_by)
        proposal.eval_run = run
        proposal.save(update_fields=["eval_run", "updated_at"])
        alert_clear(
            project_id=proposal.project_id,
            key=_followup_alert_key(proposal.pk),
            resolution=f"Queued as evaluation {run.pk}.",
            now=now,
        )
    return run


def _followup_refused(proposal_id: int, message: str, now: dt.datetime) -> None:
    proposal = RetrainProposal.objects.select_related("registered_model").get(pk=proposal_id)
    alert_raise(
        AlertRaise(
            project_id=proposal.project_id,
            kind=AlertKind.RETRAIN,
            key=_followup_alert_key(proposal_id),
            title=f"The gating evaluation of the retrain of {proposal.registered_model.name}/"
            f"{proposal.alias} could not be queued",
            message=f"{message} It is tried again at the next check.",
            registered_model_id=proposal.registered_model_id,
            model_version_id=proposal.served_version_id,
            cooldown=ALERT_COOLDOWN,
        ),
        now=now,
    )


def retrain_followups_run(now: dt.datetime | None = None) -> int:
    """Queue the gating evaluation of every accepted proposal whose job has registered its
    version and that has none yet, as the lead who accepted it; the evaluations queued. A
    refusal (the budget's hard cap on a hosted model, say) raises an alert and is tried again
    next time; running it twice queues nothing twice."""
    now = now or timezone.now()
    waiting = (
        RetrainProposal.objects.filter(
            state=ProposalState.ACCEPTED,
            eval_run__isnull=True,
            training_job__model_versions__isnull=False,
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    queued = 0
    for proposal_id in list(waiting):
        try:
            queued += _followup(proposal_id, now) is not None
        except ApplicationError as refused:
            logger.warning("gating evaluation of proposal %s refused: %s", proposal_id, refused)
            _followup_refused(proposal_id, refused.message, now)
    return queued
