"""The advisor's inputs, read from a finished evaluation: each candidate as an option with its
measured quality, its paired comparison with the fine-tuned candidate, its prices and request
shape, the training cost, and the dataset's version history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from statistics import fmean, variance

from datasets.models import Dataset, DatasetVersion
from datasets.quality.services import version_label_readiness
from datasets.selectors import version_diff
from registry.models import ModelVersion
from training.models import TrainingJob

from .advisor import (
    Advice,
    DatasetVersionChange,
    Option,
    OptionKind,
    Pricing,
    RequestShape,
    advise,
    cost_per_request,
)
from .models import Candidate, CandidateKind, EvalRun, Prompting
from .report import generates_locally, local_usd_per_hour, scores_by_candidate
from .scoring import (
    BOOTSTRAP_RESAMPLES,
    METRICS,
    machine_time_usd,
    paired_scores,
    paired_test,
    stored_decision,
)
from .statistics import Decision, decide, mean_interval, paired_bootstrap, wilson_interval

FINE_TUNED_KINDS = (CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT)
# Versions looked at for "requirements change often"; the advisor's window is the last 30 days.
VERSION_HISTORY_LIMIT = 12
# The advisor's questions, on its page and in the API alike: the requests expected a month
# and the months over which training has to pay for itself, their defaults and their bounds.
DEFAULT_MONTHLY_REQUESTS = 100_000
MAX_MONTHLY_REQUESTS = 10**10
DEFAULT_HORIZON_MONTHS = 12
MAX_HORIZON_MONTHS = 120


class NoAdvice(Exception):
    """The run cannot answer the question; the message says why."""


@dataclass(frozen=True)
class RunAdvice:
    advice: Advice
    fine_tuned: Candidate
    metric: str
    # The dataset whose quality target the advice checked (the fine-tuned model's training
    # data, else the evaluated data), or the training data's dataset when neither sets one.
    target_dataset: Dataset

    @property
    def metric_label(self) -> str:
        return METRICS[self.metric].label

    @property
    def points(self) -> bool:
        return METRICS[self.metric].points


def _kind_of(candidate: Candidate) -> OptionKind:
    if candidate.kind in FINE_TUNED_KINDS:
        return "fine_tuned"
    if candidate.prompting == Prompting.FEW_SHOT:
        return "few_shot"
    # A general hosted model prompted zero-shot is the "larger model" alternative.
    return "zero_shot" if candidate.kind == CandidateKind.BASE else "larger_model"


def _has_token_prices(candidate: Candidate) -> bool:
    return (
        candidate.input_usd_per_million_tokens is not None
        and candidate.output_usd_per_million_tokens is not None
    )


def _pricing(candidate: Candidate) -> Pricing:
    """A model this machine generates: the machine time each answer took here (the batch
    average), at FTPORTAL_LOCAL_USD_PER_HOUR, as its cost per 1,000 requests on the
    evaluation page. Otherwise its token prices; a hosted model without prices is priced by
    the time it kept this machine waiting, at the same rate."""
    if _has_token_prices(candidate) and not generates_locally(candidate):
        return Pricing(
            usd_per_million_input=candidate.input_usd_per_million_tokens or Decimal(0),
            usd_per_million_output=candidate.output_usd_per_million_tokens or Decimal(0),
        )
    latency = candidate.metrics.get("latency", {}).get("mean") or 0.0
    return Pricing(
        usd_per_million_input=Decimal(0),
        usd_per_million_output=Decimal(0),
        usd_per_request=machine_time_usd(latency, local_usd_per_hour()),
    )


def _training_job(candidate: Candidate) -> TrainingJob | None:
    if candidate.model_version is not None:
        return candidate.model_version.training_job
    if candidate.checkpoint is not None:
        return candidate.checkpoint.job
    return None


def _training_cost(job: TrainingJob | None) -> Decimal:
    if job is None:
        return Decimal(0)
    return job.actual_cost_usd or job.estimated_cost_usd or Decimal(0)


def version_history(version: DatasetVersion) -> list[DatasetVersionChange]:
    """The dataset's recent versions, each with the share of examples that changed since the
    one before (the first counts as all new)."""
    versions = list(
        DatasetVersion.objects.filter(dataset_id=version.dataset_id).order_by("-number")[
            :VERSION_HISTORY_LIMIT
        ]
    )[::-1]
    history = []
    for older, newer in zip([None, *versions], versions, strict=False):
        share = 1.0
        if older is not None:
            diff = version_diff(older, newer)
            moved = len(diff.added) + len(diff.removed) + len(diff.changed)
            share = min(1.0, moved / max(newer.example_count, 1))
        history.append(DatasetVersionChange(newer.created_at, newer.example_count, share))
    return history


def quality_interval(scores: Iterable[float], *, binary: bool) -> tuple[float, float] | None:
    """The 95 % interval of a candidate's mean score over its answers: Wilson's for a rate of
    0/1 scores, the normal one of a mean otherwise; None without scores."""
    values = list(scores)
    if not values:
        return None
    if binary:
        return wilson_interval(round(sum(values)), len(values))
    spread = variance(values) if len(values) > 1 else 0.0
    return mean_interval(len(values), fmean(values), spread)


def training_label_counts(version: DatasetVersion) -> dict[str, int] | None:
    """Each label's training examples in the version; None unless it was frozen under a
    label-set contract."""
    per_label = version_label_readiness(version)
    if per_label is None:
        return None
    return {row["label"]: row["train"] for row in per_label["counts"]}


def _target_dataset(training_data: DatasetVersion, evaluated: DatasetVersion) -> Dataset:
    # The task is what the model was trained for; a separate test set's dataset may say it too.
    if (
        training_data.dataset.quality_target is None
        and evaluated.dataset.quality_target is not None
    ):
        return evaluated.dataset
    return training_data.dataset


def _reported(run: EvalRun, a: int, b: int, metric: str) -> Decision | None:
    """The rule's verdict on the run's stored comparison of a with b, when the report has it:
    the bootstrap over a large run takes seconds, too long to redo on every page view."""
    for stored in run.report.get("comparisons", []):
        if (stored["a"], stored["b"], stored["metric"]) == (a, b, metric):
            return stored_decision(stored)
    return None


def run_advice(
    run: EvalRun,
    *,
    monthly_requests: int,
    horizon_months: int,
    fine_tuned_id: int | None = None,
) -> RunAdvice:
    """Fine-tune or prompt, for this run's candidates; NoAdvice when it cannot say."""
    candidates = list(
        run.candidates.select_related(
            "model_version__training_job",
            "model_version__dataset_version",
            "checkpoint__job",
            "base_model",
        )
    )
    tuned = [c for c in candidates if c.kind in FINE_TUNED_KINDS]
    if not tuned:
        raise NoAdvice("This evaluation has no fine-tuned candidate to weigh against prompting.")
    fine_tuned = next((c for c in tuned if c.pk == fine_tuned_id), tuned[0])
    metric = run.report.get("primary_metric") or run.primary_metric
    if metric not in METRICS or fine_tuned.metrics.get("means", {}).get(metric) is None:
        raise NoAdvice("The evaluation has not scored the fine-tuned candidate yet.")
    table = scores_by_candidate(run)
    job = _training_job(fine_tuned)
    options = []
    for candidate in candidates:
        if candidate.kind in FINE_TUNED_KINDS and candidate.pk != fine_tuned.pk:
            continue  # one fine-tuned option: the others are alternatives to it, not prompts
        comparison = None
        if candidate.pk != fine_tuned.pk:
            comparison = _reported(run, fine_tuned.pk, candidate.pk, metric)
            if comparison is None:
                ours, theirs = paired_scores(table[fine_tuned.pk], table[candidate.pk], metric)
                if ours:
                    spec = METRICS[metric]
                    comparison = decide(
                        paired_bootstrap(ours, theirs, resamples=BOOTSTRAP_RESAMPLES),
                        paired_test(spec, ours, theirs),
                        higher_is_better=spec.higher_is_better,
                    )
        options.append(
            Option(
                name=candidate.label,
                kind=_kind_of(candidate),
                quality=candidate.metrics.get("means", {}).get(metric) or 0.0,
                pricing=_pricing(candidate),
                request_shape=RequestShape(
                    mean_prompt_tokens=candidate.metrics.get("prompt_tokens_mean", 0.0),
                    mean_completion_tokens=candidate.metrics.get("completion_tokens_mean", 0.0),
                ),
                vs_fine_tuned=comparison,
                one_off_usd=_training_cost(job) if candidate.pk == fine_tuned.pk else Decimal(0),
                quality_interval=quality_interval(
                    (s[metric] for s in table[candidate.pk].values() if metric in s),
                    binary=METRICS[metric].binary,
                ),
            )
        )
    version: ModelVersion | None = fine_tuned.model_version
    training_data = job.dataset_version if job is not None else run.dataset_version
    target_dataset = _target_dataset(training_data, run.dataset_version)
    advice = advise(
        options,
        monthly_requests=monthly_requests,
        horizon_months=horizon_months,
        training_examples=training_data.train_count,
        train_loss=version.final_train_loss if version else _checkpoint_loss(fine_tuned, "train"),
        val_loss=version.final_val_loss if version else _checkpoint_loss(fine_tuned, "val"),
        version_history=version_history(training_data),
        metric_label=METRICS[metric].label,
        points=METRICS[metric].points,
        training_label_counts=training_label_counts(training_data),
        quality_target=target_dataset.quality_target,
    )
    return RunAdvice(
        advice=advice, fine_tuned=fine_tuned, metric=metric, target_dataset=target_dataset
    )


def _checkpoint_loss(candidate: Candidate, which: str) -> float | None:
    if candidate.checkpoint is None:
        return None
    return candidate.checkpoint.train_loss if which == "train" else candidate.checkpoint.val_loss


def cost_per_1000_requests_of(candidate: Candidate) -> tuple[Decimal, str]:
    """What 1,000 requests like this candidate's evaluated ones cost, and on what basis: its
    token prices, else the machine time each answer took at the configured hourly rate (the
    same pricing the advisor weighs)."""
    option = _option_of(candidate, metric="")
    cost = (cost_per_request(option) * 1000).quantize(Decimal("0.0001"))
    if _has_token_prices(candidate) and not generates_locally(candidate):
        return cost, "token prices"
    return cost, f"machine time at ${local_usd_per_hour()} an hour"


@dataclass(frozen=True)
class PricedAlternative:
    """A prompted candidate the fine-tuned model was weighed against: its quality on the run's
    primary metric and what one request like its evaluated ones costs, as the advisor prices
    it (token prices, else machine time)."""

    name: str
    kind_label: str
    quality: float
    cost_per_request: Decimal
    run_id: int


def _option_of(candidate: Candidate, metric: str) -> Option:
    return Option(
        name=candidate.label,
        kind=_kind_of(candidate),
        quality=candidate.metrics.get("means", {}).get(metric) or 0.0,
        pricing=_pricing(candidate),
        request_shape=RequestShape(
            mean_prompt_tokens=candidate.metrics.get("prompt_tokens_mean", 0.0),
            mean_completion_tokens=candidate.metrics.get("completion_tokens_mean", 0.0),
        ),
    )


def priced_alternatives(run: EvalRun) -> list[PricedAlternative]:
    """The run's candidates that are not fine-tuned, the best on its primary metric first."""
    metric = run.report.get("primary_metric") or run.primary_metric
    alternatives = []
    for candidate in run.candidates.select_related("base_model", "endpoint"):
        if candidate.kind in FINE_TUNED_KINDS:
            continue
        option = _option_of(candidate, metric)
        alternatives.append(
            PricedAlternative(
                name=option.name,
                kind_label=option.kind_label,
                quality=option.quality,
                cost_per_request=cost_per_request(option),
                run_id=run.pk,
            )
        )
    return sorted(alternatives, key=lambda alternative: -alternative.quality)
