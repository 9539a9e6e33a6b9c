"""The numbers of a finished run: each candidate's summary, the paired comparisons with the
reference candidate, the verdict sentences and, for a checkpoint sweep, which checkpoint to
keep. Written once into EvalRun.report and Candidate.metrics when the run ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, cast

from django.conf import settings

from catalog.models import Provider
from ftportal.spending import SpendKind, SpentQuery, ledger_spent

from .contracts import contract_for_run
from .judge import JudgeSummary, Outcome, PairVerdict, Verdict, summarise
from .models import Candidate, CandidateKind, EvalKind, EvalResult, EvalRun, JudgeVerdict
from .prompting import answer_of
from .scoring import (
    METRICS,
    ScoredAnswer,
    best_candidate,
    candidate_summary,
    compare_candidates,
    metrics_present,
    stored_decision,
)
from .statistics import RULE, Decision, VerdictOutcome


def generates_locally(candidate: Candidate) -> bool:
    """Whether this worker generates the candidate's answers itself, in batches (what
    :func:`evaluation.runner.chat_for` decides): a local adapter or a local base model."""
    if candidate.kind == CandidateKind.MODEL_VERSION and candidate.model_version is not None:
        return bool(candidate.model_version.adapter_dir)
    if candidate.kind == CandidateKind.CHECKPOINT and candidate.checkpoint is not None:
        return bool(candidate.checkpoint.path)
    if candidate.kind == CandidateKind.BASE and candidate.base_model is not None:
        return candidate.base_model.provider == Provider.LOCAL
    return False


def local_usd_per_hour() -> Decimal:
    """What an hour of this machine costs: FTPORTAL_LOCAL_USD_PER_HOUR, the rate training
    prices local compute at."""
    return Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR))


def candidate_summary_of(candidate: Candidate) -> dict[str, Any]:
    rows = EvalResult.objects.filter(candidate=candidate).select_related("item")
    answers = [
        ScoredAnswer(
            output=row.output,
            reference=answer_of(row.item.messages),
            scores=row.scores,
            latency_seconds=row.latency_seconds,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            failed=bool(row.error),
            confidence=row.confidence,
        )
        for row in rows
    ]
    return candidate_summary(
        answers,
        input_usd_per_million=candidate.input_usd_per_million_tokens,
        output_usd_per_million=candidate.output_usd_per_million_tokens,
        local_usd_per_hour=local_usd_per_hour() if generates_locally(candidate) else None,
        # Label metrics follow the run's contract; abstention the candidate's threshold.
        contract=contract_for_run(candidate.run),
        abstain_below=candidate.abstain_below,
    )


def scores_by_candidate(run: EvalRun) -> dict[int, dict[int, dict[str, float]]]:
    """candidate id -> item id -> that answer's scores."""
    table: dict[int, dict[int, dict[str, float]]] = {c.pk: {} for c in run.candidates.all()}
    rows = EvalResult.objects.filter(candidate__run=run).values_list(
        "candidate_id", "item_id", "scores"
    )
    for candidate_id, item_id, scores in rows:
        table[candidate_id][item_id] = scores
    return table


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def _checkpoint_recommendation(
    candidates: Sequence[Candidate], best_id: int, metric: str, decisions: Mapping[int, Decision]
) -> dict[str, Any]:
    """Which checkpoint to keep, by the task metric and the decision rule, and whether the loss
    would have chosen differently (the reason to evaluate checkpoints at all). ``decisions``
    holds the best checkpoint against each other one, by the other's candidate id."""
    spec = METRICS[metric]
    by_id = {c.pk: c for c in candidates}
    best = by_id[best_id]
    best_value = best.metrics["means"][metric]
    losses = {
        c.pk: c.checkpoint.val_loss
        for c in candidates
        if c.checkpoint is not None and c.checkpoint.val_loss is not None
    }
    lowest_loss = by_id[min(losses, key=lambda pk: losses[pk])] if losses else None
    sentence = f"Keep {best.label}: best {spec.label} ({_percent(best_value)})"
    # Quality first: a checkpoint the rule does not separate from the best is as good as far
    # as this test set can tell, and the sentence says so instead of "beats".
    close = [
        (by_id[other], decision)
        for other, decision in decisions.items()
        if other in by_id and decision.outcome != VerdictOutcome.BETTER
    ]
    if close:
        rival, decision = close[0]
        sentence += (
            f", but not clearly better than {rival.label}: "
            f"{decision.sentence(best.label, rival.label, spec.label, spec.points)}"
        )
    elif decisions:
        sentence += ", better than every other checkpoint by the rule"
    sentence += "."
    if lowest_loss is not None and lowest_loss.pk != best.pk:
        loss_value = lowest_loss.metrics.get("means", {}).get(metric)
        scored = f", which scores {_percent(loss_value)}" if loss_value is not None else ""
        sentence += (
            f" The lowest validation loss ({losses[lowest_loss.pk]:.3f}) is at "
            f"{lowest_loss.label}{scored}: choosing by loss would be worse."
        )
    return {
        "candidate": best.pk,
        "checkpoint": best.checkpoint_id,
        "step": best.checkpoint.step if best.checkpoint else None,
        "value": best_value,
        "lowest_val_loss_candidate": lowest_loss.pk if lowest_loss else None,
        "sentence": sentence,
        "rule": RULE,
    }


@dataclass(frozen=True)
class Verdicts:
    """What a finished run concludes, by the one decision rule: the verdict sentences on the
    task metric, the checkpoint to keep (sweeps only) and the rule they follow."""

    sentences: list[str]
    recommendation: dict[str, Any] | None
    rule: str


def run_verdicts(run: EvalRun, candidates: Sequence[Candidate]) -> Verdicts:
    """The verdicts of the run's stored comparisons, decided by the rule each time they are
    read, so that runs stored before the rule existed read the same way as new ones."""
    report = run.report
    labels = {c.pk: c.label for c in candidates}
    primary = report.get("primary_metric", "")
    sentences, decisions = [], {}
    for stored in report.get("comparisons", []):
        if stored["metric"] != primary or primary not in METRICS:
            continue
        spec = METRICS[primary]
        decision = stored_decision(stored)
        decisions[stored["b"]] = decision
        label_a, label_b = labels.get(stored["a"], "?"), labels.get(stored["b"], "?")
        sentences.append(_capitalised(decision.sentence(label_a, label_b, spec.label, spec.points)))
    recommendation = None
    # A sweep's reference is its best checkpoint, when one has a score on the task metric.
    best = next((c for c in candidates if c.pk == report.get("reference")), None)
    scored = best is not None and best.metrics.get("means", {}).get(primary) is not None
    if run.kind == EvalKind.CHECKPOINTS and best is not None and scored:
        recommendation = _checkpoint_recommendation(candidates, best.pk, primary, decisions)
    return Verdicts(sentences, recommendation, RULE)


def run_report(run: EvalRun) -> dict[str, Any]:
    candidates = list(run.candidates.select_related("checkpoint"))
    table = scores_by_candidate(run)
    metrics = metrics_present([s for per_item in table.values() for s in per_item.values()])
    summaries = {c.pk: c.metrics for c in candidates}
    primary = run.primary_metric if run.primary_metric in metrics else (metrics or [""])[0]
    report: dict[str, Any] = {"metrics": metrics, "primary_metric": primary}
    if not candidates or not primary:
        return report
    reference_id = candidates[0].pk
    best_id = best_candidate(summaries, primary)
    if run.kind == EvalKind.CHECKPOINTS and best_id is not None:
        reference_id = best_id  # the sweep compares the best checkpoint with each other one
    reference = next(c for c in candidates if c.pk == reference_id)
    comparisons = []
    for other in candidates:
        if other.pk == reference.pk:
            continue
        for metric in metrics:
            comparison = compare_candidates(
                name_a=reference.label,
                name_b=other.label,
                scores_a=table[reference.pk],
                scores_b=table[other.pk],
                metric=metric,
            )
            if comparison is not None:
                comparisons.append({"a": reference.pk, "b": other.pk, **comparison})
    report["reference"] = reference.pk
    report["comparisons"] = comparisons
    run.report = report  # what run_verdicts reads; the caller saves the run
    verdicts = run_verdicts(run, candidates)
    report["verdicts"] = verdicts.sentences
    report["rule"] = verdicts.rule
    if verdicts.recommendation is not None:
        report["recommendation"] = verdicts.recommendation
    judged = judge_report(run, candidates)
    if judged:
        report["judge"] = judged
        cost = judge_cost(run)
        if cost is not None:
            report["judge_cost_usd"] = str(cost)
    return report


def judge_cost(run: EvalRun) -> Decimal | None:
    """What the judge cost, as the ledger holds it (its tokens at the run's judge prices, or
    a local judge's worker time); None when unknown (an unpriced spend, or none recorded)."""
    spent = ledger_spent(run_spent(run, kind=SpendKind.JUDGING))
    return None if spent is None else spent.quantize(Decimal("0.000001"))


def run_spent(run: EvalRun, *, kind: SpendKind | None = None) -> SpentQuery:
    """The ledger's rows of ``run``, every attempt's (``evaluation.spending``)."""
    return SpentQuery(eval_run_id=run.pk, kind=kind)


def judge_report(run: EvalRun, candidates: list[Candidate]) -> list[dict[str, Any]]:
    """Per judged pair: the judge's wins, ties and position consistency, and a sentence."""
    labels = {c.pk: c.label for c in candidates}
    pairs: dict[tuple[int, int], list[PairVerdict]] = {}
    rows = JudgeVerdict.objects.filter(run=run).values_list(
        "candidate_a_id", "candidate_b_id", "outcome", "original", "swapped"
    )
    for a, b, outcome, original, swapped in rows:
        # The stored outcome is what combine() gave when the verdict came in.
        pairs.setdefault((a, b), []).append(
            PairVerdict(
                outcome=cast(Outcome, outcome),
                original=_stored_verdict(original),
                swapped=_stored_verdict(swapped),
            )
        )
    judged = []
    for (a, b), verdicts in sorted(pairs.items()):
        summary = summarise(verdicts)
        judged.append(
            {
                "a": a,
                "b": b,
                **asdict(summary),
                "sentence": _judge_sentence(labels[a], labels[b], summary),
            }
        )
    return judged


def _stored_verdict(text: str) -> Verdict | None:
    return cast(Verdict, text) if text in ("1", "2", "tie") else None


def _judge_sentence(label_a: str, label_b: str, summary: JudgeSummary) -> str:
    decided = summary.a_wins + summary.b_wins
    verdict = (
        f"The judge preferred {label_a} on {summary.a_wins} and {label_b} on {summary.b_wins} "
        f"of {summary.items} items, with {summary.ties} ties"
    )
    if decided:
        verdict += f" (sign test p = {summary.sign_test_p:.3f})"
    if summary.inconsistent:
        verdict += (
            f"; on {summary.inconsistent} items it changed its mind when the answers swapped "
            "places, and those count for neither"
        )
    return verdict + "."


def _capitalised(sentence: str) -> str:
    # Only the sentence's own opening word: a candidate's label keeps its spelling.
    if sentence.startswith(("no ", "borderline ")):
        sentence = sentence[0].upper() + sentence[1:]
    return sentence + "."
