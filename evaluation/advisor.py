"""Fine-tune or prompt? Quality, cost, break-even and the guide's pitfalls, side by side.

Plain computations: callers pass measured numbers (quality means and paired confidence
intervals from :mod:`evaluation.statistics`, token counts per request, prices, training numbers,
the dataset's version history) and get back a table, a list of pitfalls and one recommendation
sentence derived from those numbers. Nothing here touches Django or the database.

Money is :class:`~decimal.Decimal` throughout (US dollars), unrounded; round for display only.
Quality is a task metric where higher is better (accuracy, F1, a judge's score in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from datasets.quality.stats import (
    INSUFFICIENT_BELOW,
    MIN_TRAINING_EXAMPLES_PER_LABEL,
    RECOMMENDED_MAX,
)

from .statistics import RULE, Decision, VerdictOutcome

OptionKind = Literal["fine_tuned", "few_shot", "zero_shot", "larger_model"]
OPTION_KINDS: tuple[OptionKind, ...] = ("fine_tuned", "few_shot", "zero_shot", "larger_model")
# What each kind is called on the page.
OPTION_KIND_LABELS: dict[OptionKind, str] = {
    "fine_tuned": "fine-tuned",
    "few_shot": "few-shot prompt",
    "zero_shot": "zero-shot prompt",
    "larger_model": "larger model, prompted",
}

# 365 days x 24 hours / 12 months: the average month, so a year of hosting is 12 monthly bills.
HOURS_PER_MONTH = Decimal(730)
TOKENS_PER_PRICED_UNIT = Decimal(1_000_000)  # prices are quoted per million tokens

# The guide: "Start with 100 to 500 high-quality examples" and "Without hundreds of good
# examples, results may disappoint". Below the bottom of that range the data is insufficient:
# the readiness report's thresholds (datasets.quality.stats), so both say the same.
RECOMMENDED_TRAINING_EXAMPLES = (INSUFFICIENT_BELOW, RECOMMENDED_MAX)
# Under a label-set contract the same pitfall applies to each label (the readiness report's
# threshold, datasets.quality.stats): the explanation names this many of the labels under it,
# and the pitfall's details list them all with their counts.
LABELS_NAMED = 10

# Validation loss at least this many times the training loss. Train and validation come from
# the same data (the guide holds out 10 to 20 percent), so in a healthy run they stay close;
# half again as high means the model fits its own examples markedly better than new ones.
OVERFITTING_LOSS_RATIO = 1.5
# The last validation loss at least this many times the best one seen earlier in the run: the
# run kept training well past the point where it generalised best ("training too long").
OVERFITTING_VAL_RISE = 1.1
# Training accuracy at least this far above validation accuracy (a fraction: 0.10 = 10 points).
OVERFITTING_ACCURACY_GAP = 0.10

# "Requirements change often": at least this many versions within the window, each changing at
# least this share of the examples. Three large revisions in a month mean retraining about every
# ten days, while a prompt is edited in minutes (the guide: "prompting adapts faster than
# retraining. Fine-tuned models lock in behavior").
FREQUENT_CHANGE_WINDOW = timedelta(days=30)
FREQUENT_CHANGE_VERSIONS = 3
LARGE_CHANGE_SHARE = 0.20

PitfallCode = Literal[
    "prompting_is_enough", "insufficient_data", "overfitting", "requirements_change_often"
]
BreakEvenStatus = Literal["cheaper_from_first_request", "pays_back", "never_pays_back"]
# When fine-tuning buys no measured quality, what it saves must be worth the work it adds
# (retraining and re-evaluating whenever the data changes, one more model to host and watch):
# at least this share of the prompt's bill over the horizon, and at least this many dollars.
# Below that, a few dollars a year (observed: $3) would decide between two equal options.
MATERIAL_SAVINGS_SHARE = Decimal("0.10")
MATERIAL_SAVINGS_USD = Decimal(500)
# Pitfalls that cast doubt on the fine-tuned model's measured gain itself.
_DOUBTFUL_TRAINING: frozenset[PitfallCode] = frozenset({"insufficient_data", "overfitting"})


def _at_least(value: float, threshold: float) -> bool:
    # Thresholds are inclusive, and 0.9 - 0.8 must count as a gap of 0.10 despite binary floats.
    return value >= threshold or math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def _check_money(label: str, value: Decimal) -> None:
    # A float would mix binary rounding into money (and Decimal * float raises later anyway).
    if not isinstance(value, Decimal):
        raise TypeError(f"{label} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{label} must be a finite amount of at least 0, got {value}")


# ---------------------------------------------------------------------------
# What each option costs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pricing:
    """What one option costs to run, in US dollars.

    Hosted APIs charge per million input and output tokens; some add a fixed fee per request.
    Self-hosted or local models cost mostly the machine: ``usd_per_hosting_hour`` becomes a
    fixed monthly cost that is paid whatever the volume.
    """

    usd_per_million_input: Decimal
    usd_per_million_output: Decimal
    usd_per_request: Decimal = Decimal(0)
    usd_per_hosting_hour: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        _check_money("usd_per_million_input", self.usd_per_million_input)
        _check_money("usd_per_million_output", self.usd_per_million_output)
        _check_money("usd_per_request", self.usd_per_request)
        _check_money("usd_per_hosting_hour", self.usd_per_hosting_hour)

    @property
    def monthly_fixed_usd(self) -> Decimal:
        return self.usd_per_hosting_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class RequestShape:
    """Mean tokens of one request, as measured when the option was evaluated.

    For a few-shot option the prompt tokens already include the examples: they are paid for on
    every request, which is the main running cost a fine-tuned model avoids.
    """

    mean_prompt_tokens: float
    mean_completion_tokens: float

    def __post_init__(self) -> None:
        for label, value in (
            ("mean_prompt_tokens", self.mean_prompt_tokens),
            ("mean_completion_tokens", self.mean_completion_tokens),
        ):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{label} must be a finite number of at least 0, got {value}")


@dataclass(frozen=True)
class Option:
    """One way to do the task: the fine-tuned model, or a prompt to a base or larger model.

    ``quality`` is the mean task metric on the evaluation set, ``quality_interval`` its 95 %
    confidence interval when the caller has one. ``vs_fine_tuned`` is the decision
    rule's verdict (:func:`evaluation.statistics.decide`) on the paired comparison on the same
    examples with the fine-tuned model as ``a`` and this option as ``b``, so its difference and
    interval are fine-tuned minus this option; None for the fine-tuned option itself, or when
    the option was not evaluated on the same examples. ``one_off_usd`` is the training cost of
    the fine-tuned option and 0 for the others.
    """

    name: str
    kind: OptionKind
    quality: float
    pricing: Pricing
    request_shape: RequestShape
    vs_fine_tuned: Decision | None = None
    one_off_usd: Decimal = Decimal(0)
    quality_interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(OPTION_KINDS)}, got {self.kind!r}")
        if not math.isfinite(self.quality):
            raise ValueError(f"quality must be a finite number, got {self.quality}")
        _check_money("one_off_usd", self.one_off_usd)
        if self.is_fine_tuned and self.vs_fine_tuned is not None:
            raise ValueError("the fine-tuned option is not compared with itself")
        if not self.is_fine_tuned and self.one_off_usd:
            raise ValueError(f"only the fine-tuned option has a one-off cost, {self.name} has one")
        if self.quality_interval is not None:
            low, high = self.quality_interval
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"quality_interval must be finite, low <= high, got {low}, {high}")

    @property
    def is_fine_tuned(self) -> bool:
        return self.kind == "fine_tuned"

    @property
    def kind_label(self) -> str:
        return OPTION_KIND_LABELS[self.kind]


def cost_per_request(option: Option) -> Decimal:
    """Dollars per request: mean prompt tokens x input price + mean completion tokens x output
    price (both per million tokens), plus any fixed fee per request. Hosting is monthly, not
    per request: see :func:`monthly_cost`."""
    pricing, shape = option.pricing, option.request_shape
    # str() first so a measured mean such as 1200.5 becomes Decimal("1200.5") exactly.
    prompt = Decimal(str(shape.mean_prompt_tokens))
    completion = Decimal(str(shape.mean_completion_tokens))
    tokens_cost = (
        prompt * pricing.usd_per_million_input + completion * pricing.usd_per_million_output
    ) / TOKENS_PER_PRICED_UNIT
    return tokens_cost + pricing.usd_per_request


def _check_volume(monthly_requests: int) -> None:
    if monthly_requests < 0:
        raise ValueError(f"monthly_requests must be at least 0, got {monthly_requests}")


def monthly_cost(option: Option, monthly_requests: int) -> Decimal:
    """Dollars per month at this volume: cost per request x requests + fixed monthly hosting.
    The one-off training cost is not included (see :func:`break_even`)."""
    _check_volume(monthly_requests)
    return cost_per_request(option) * monthly_requests + option.pricing.monthly_fixed_usd


# ---------------------------------------------------------------------------
# Break-even
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakEven:
    """Whether, and when, the fine-tuned option's running savings repay its training cost.

    With T the training cost, s = savings per request = alternative's cost per request -
    fine-tuned cost per request, and g = fixed monthly savings = alternative's monthly hosting -
    fine-tuned monthly hosting (0 for two hosted APIs), the fine-tuned option saves
    S(V) = s x V + g dollars a month at V requests a month.

    * ``payback_months`` at the given volume = T / S(V) when S(V) > 0; 0 when there is nothing
      to repay (T = 0 and S(V) >= 0); None when it never pays back at that volume.
    * Paying back within a horizon of H months means S(V) x H >= T, i.e. s x V >= T / H - g.
      When s > 0 that holds above ``min_monthly_requests`` = max(0, (T / H - g) / s); with no
      hosting costs this is the familiar T / (s x H). When s < 0 (the fine-tuned option costs
      more per request but saves on hosting) it holds only up to ``max_monthly_requests`` =
      (g - T / H) / -s. When s = 0 it holds at every volume or at none. No volume at all:
      ``min_monthly_requests`` is None. No upper limit: ``max_monthly_requests`` is None.
    * ``status``: "cheaper_from_first_request" when nothing is to be repaid (T = 0) and the
      fine-tuned option never costs more (s >= 0 and g >= 0; equal costs count, there is
      nothing to repay); otherwise "never_pays_back" when it saves nothing at any volume
      (s <= 0 and g <= 0); otherwise "pays_back" (some volume repays the training cost, perhaps
      only after the horizon: see ``min_monthly_requests``).
    """

    alternative: str
    status: BreakEvenStatus
    savings_per_request: Decimal
    fixed_monthly_savings: Decimal
    training_cost: Decimal
    horizon_months: int
    monthly_requests: int
    monthly_savings: Decimal
    payback_months: Decimal | None
    min_monthly_requests: Decimal | None
    max_monthly_requests: Decimal | None

    @property
    def pays_back_within_horizon(self) -> bool:
        """Whether some monthly volume repays the training cost within the horizon."""
        return self.min_monthly_requests is not None

    @property
    def pays_back_at_volume(self) -> bool:
        """Whether the given volume repays the training cost within the horizon."""
        return self.payback_months is not None and self.payback_months <= self.horizon_months


def _status(training: Decimal, per_request: Decimal, fixed: Decimal) -> BreakEvenStatus:
    if training == 0 and per_request >= 0 and fixed >= 0:
        return "cheaper_from_first_request"
    if per_request <= 0 and fixed <= 0:
        return "never_pays_back"
    return "pays_back"


def _payback_months(training: Decimal, monthly_savings: Decimal) -> Decimal | None:
    if training == 0 and monthly_savings >= 0:
        return Decimal(0)
    if monthly_savings <= 0:
        return None  # never: dividing would give infinity or negative months
    return training / monthly_savings


def _volume_range(
    training: Decimal, per_request: Decimal, fixed: Decimal, horizon_months: int
) -> tuple[Decimal | None, Decimal | None]:
    # Solve s x V >= T / H - g for V >= 0; see BreakEven for the three cases of s.
    needed = training / horizon_months - fixed
    if per_request > 0:
        return max(Decimal(0), needed / per_request), None
    if per_request == 0:
        return (Decimal(0), None) if needed <= 0 else (None, None)
    upper = needed / per_request  # s < 0 flips the inequality: V <= (g - T / H) / -s
    return (Decimal(0), upper) if upper >= 0 else (None, None)


def break_even(
    fine_tuned: Option, alternative: Option, *, monthly_requests: int, horizon_months: int
) -> BreakEven:
    """Break-even of ``fine_tuned`` against ``alternative``; the math is on :class:`BreakEven`."""
    if not fine_tuned.is_fine_tuned:
        raise ValueError(f"{fine_tuned.name} is not the fine-tuned option")
    if alternative.is_fine_tuned:
        raise ValueError(f"{alternative.name} is a fine-tuned option, not an alternative")
    if horizon_months < 1:
        raise ValueError(f"horizon_months must be at least 1, got {horizon_months}")
    _check_volume(monthly_requests)
    training = fine_tuned.one_off_usd
    per_request = cost_per_request(alternative) - cost_per_request(fine_tuned)
    fixed = alternative.pricing.monthly_fixed_usd - fine_tuned.pricing.monthly_fixed_usd
    savings = per_request * monthly_requests + fixed
    lowest, highest = _volume_range(training, per_request, fixed, horizon_months)
    return BreakEven(
        alternative=alternative.name,
        status=_status(training, per_request, fixed),
        savings_per_request=per_request,
        fixed_monthly_savings=fixed,
        training_cost=training,
        horizon_months=horizon_months,
        monthly_requests=monthly_requests,
        monthly_savings=savings,
        payback_months=_payback_months(training, savings),
        min_monthly_requests=lowest,
        max_monthly_requests=highest,
    )


# ---------------------------------------------------------------------------
# Pitfalls
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pitfall:
    code: PitfallCode
    title: str
    explanation: str
    # What the pitfall counts, item by item, when there are more than a sentence names (the
    # labels under the per-label threshold, with their training examples).
    details: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class DatasetVersionChange:
    """One version of the training dataset: when it was made, how many examples it holds, and
    the share (0..1) of examples added, changed or removed since the previous version."""

    created_at: datetime
    examples: int
    changed_share: float

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ValueError(f"examples must be at least 0, got {self.examples}")
        if not 0 <= self.changed_share <= 1:
            raise ValueError(f"changed_share must be between 0 and 1, got {self.changed_share}")


def _usd(amount: Decimal) -> str:
    # Cents for bills; six decimals for per-request amounts, which are fractions of a cent.
    if amount == 0 or abs(amount) >= Decimal("0.01"):
        return f"${amount:,.2f}"
    return f"${amount:.6f}"


def _percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def prompting_is_enough(
    fine_tuned: Option,
    alternative: Option,
    *,
    metric_label: str = "quality",
    points: bool = True,
) -> Pitfall | None:
    """Flags a prompting option the fine-tuned model is not better than by the decision rule
    (no significant difference, borderline, or worse). None when the rule says the fine-tuned
    model is better, or when there is no paired comparison to judge. ``points``: the metric is
    a fraction in [0, 1], reported x 100 as in :meth:`~evaluation.statistics.Decision.sentence`.
    """
    decision = alternative.vs_fine_tuned
    if alternative.is_fine_tuned or decision is None or decision.outcome == VerdictOutcome.BETTER:
        return None
    verdict = decision.sentence(fine_tuned.name, alternative.name, metric_label, points)
    return Pitfall(
        code="prompting_is_enough",
        title=f"Prompting may be enough: {alternative.name}",
        explanation=(
            f"The fine-tuned model is not reliably better: {verdict}. The guide warns that "
            "few-shot prompting of the base model sometimes performs similarly; then "
            "fine-tuning is worth it only for what it saves, against the training, hosting and "
            "retraining it adds."
        ),
    )


def insufficient_data(
    training_examples: int, label_counts: Mapping[str, int] | None = None
) -> Pitfall | None:
    """Flags fewer than 100 training examples (the bottom of the guide's 100 to 500 to start)
    and, given each label's training examples (``label_counts``, under a label-set contract),
    any label with fewer than :data:`MIN_TRAINING_EXAMPLES_PER_LABEL`, whatever the total:
    500 examples over 60 labels is 8 a label, each label learned from a handful."""
    if training_examples < 0:
        raise ValueError(f"training_examples must be at least 0, got {training_examples}")
    low, high = RECOMMENDED_TRAINING_EXAMPLES
    reasons = []
    if training_examples < low:
        reasons.append(f"Only {training_examples:,} training examples, fewer than {low}.")
    under: list[tuple[str, int]] = []
    if label_counts:
        under = sorted(
            (
                (label, count)
                for label, count in label_counts.items()
                if count < MIN_TRAINING_EXAMPLES_PER_LABEL
            ),
            key=lambda pair: (pair[1], pair[0]),
        )
    if under:
        mean = sum(label_counts.values()) / len(label_counts) if label_counts else 0.0
        named = ", ".join(f"{label!r} ({count})" for label, count in under[:LABELS_NAMED])
        more = len(under) - LABELS_NAMED
        reasons.append(
            f"{len(under)} of {len(label_counts or {})} labels have fewer than "
            f"{MIN_TRAINING_EXAMPLES_PER_LABEL} training examples ({mean:.1f} a label on "
            f"average): {named}{f' and {more} more' if more > 0 else ''}. The guide's advice "
            "holds for each label: a label learned from a handful of examples is memorised."
        )
    if not reasons:
        return None
    return Pitfall(
        code="insufficient_data",
        title="Insufficient data" + (" per label" if under else ""),
        explanation=(
            f"{' '.join(reasons)} The guide recommends starting with {low} to {high} "
            "high-quality examples: with too few, the model memorises its examples instead of "
            "generalising to new inputs."
        ),
        details=tuple(under),
    )


def _overfitting_evidence(
    train_loss: float | None,
    val_loss: float | None,
    best_val_loss: float | None,
    best_val_step: int | None,
    last_step: int | None,
    train_accuracy: float | None,
    val_accuracy: float | None,
) -> list[str]:
    evidence: list[str] = []
    # Multiply rather than divide: a training loss of 0 is the extreme case, not an error.
    if (
        train_loss is not None
        and val_loss is not None
        and val_loss > train_loss
        and _at_least(val_loss, OVERFITTING_LOSS_RATIO * train_loss)
    ):
        ratio = f"{val_loss / train_loss:.2f}x" if train_loss > 0 else "infinitely"
        evidence.append(
            f"validation loss {val_loss:.3g} is {ratio} the training loss {train_loss:.3g} "
            f"(threshold {OVERFITTING_LOSS_RATIO:g}x)"
        )
    if (
        val_loss is not None
        and best_val_loss is not None
        and best_val_step is not None
        and last_step is not None
        and best_val_step < last_step
        and val_loss > best_val_loss
        and _at_least(val_loss, OVERFITTING_VAL_RISE * best_val_loss)
    ):
        evidence.append(
            f"validation loss was best at step {best_val_step:,} ({best_val_loss:.3g}) and "
            f"rose to {val_loss:.3g} by step {last_step:,} "
            f"(threshold {OVERFITTING_VAL_RISE:g}x the best)"
        )
    if (
        train_accuracy is not None
        and val_accuracy is not None
        and _at_least(train_accuracy - val_accuracy, OVERFITTING_ACCURACY_GAP)
    ):
        evidence.append(
            f"training accuracy {_percent(train_accuracy)} against validation accuracy "
            f"{_percent(val_accuracy)} (threshold a gap of {_percent(OVERFITTING_ACCURACY_GAP)})"
        )
    return evidence


def overfitting(
    *,
    train_loss: float | None = None,
    val_loss: float | None = None,
    best_val_loss: float | None = None,
    best_val_step: int | None = None,
    last_step: int | None = None,
    train_accuracy: float | None = None,
    val_accuracy: float | None = None,
) -> Pitfall | None:
    """Flags a model that does far better on its training examples than on held-out ones.

    Any one of these is enough (each threshold inclusive): the final validation loss at least
    :data:`OVERFITTING_LOSS_RATIO` x the final training loss; the final validation loss at least
    :data:`OVERFITTING_VAL_RISE` x the best validation loss, reached at an earlier step; training
    accuracy at least :data:`OVERFITTING_ACCURACY_GAP` above validation accuracy (fractions in
    [0, 1]). Checks whose numbers are missing are skipped. A per-evaluation view of the loss
    curves is :func:`training.selectors.overfitting_signal`.
    """
    evidence = _overfitting_evidence(
        train_loss,
        val_loss,
        best_val_loss,
        best_val_step,
        last_step,
        train_accuracy,
        val_accuracy,
    )
    if not evidence:
        return None
    return Pitfall(
        code="overfitting",
        title="Overfitting",
        explanation=(
            f"The model does much better on its training examples than on new ones: "
            f"{'; '.join(evidence)}. The guide: training too long on limited data causes "
            "overfitting; train fewer epochs (3 to 5 is typical), stop at the best validation "
            "step, or add examples."
        ),
    )


def requirements_change_often(
    versions: Sequence[DatasetVersionChange],
    *,
    now: datetime,
    retraining_cost: Decimal | None = None,
) -> Pitfall | None:
    """Flags a dataset that keeps changing: at least :data:`FREQUENT_CHANGE_VERSIONS` versions
    created within :data:`FREQUENT_CHANGE_WINDOW` before ``now`` (inclusive) each changed at
    least :data:`LARGE_CHANGE_SHARE` of the examples. The oldest version is the dataset's
    creation, not a change, and is not counted. ``retraining_cost`` (one training run), when
    given, is multiplied out in the explanation. Datetimes must all be aware or all naive."""
    ordered = sorted(versions, key=lambda version: version.created_at)
    since = now - FREQUENT_CHANGE_WINDOW
    large_changes = [
        version
        for version in ordered[1:]
        if since <= version.created_at <= now
        and _at_least(version.changed_share, LARGE_CHANGE_SHARE)
    ]
    if len(large_changes) < FREQUENT_CHANGE_VERSIONS:
        return None
    shares = ", ".join(_percent(version.changed_share) for version in large_changes)
    days = FREQUENT_CHANGE_WINDOW.days
    cost = (
        f" At {_usd(retraining_cost)} a training run, that is "
        f"{_usd(retraining_cost * len(large_changes))} of retraining in {days} days."
        if retraining_cost is not None
        else ""
    )
    return Pitfall(
        code="requirements_change_often",
        title="Requirements change often",
        explanation=(
            f"{len(large_changes)} versions of the dataset in the last {days} days each "
            f"changed at least {_percent(LARGE_CHANGE_SHARE)} of the examples ({shares}). "
            "Each change means retraining and re-evaluating the fine-tuned model, while a "
            "prompt can be edited in minutes; the guide: prompting adapts faster than "
            f"retraining.{cost}"
        ),
    )


# ---------------------------------------------------------------------------
# Side by side, and the recommendation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdviceRow:
    """One option in the side-by-side table. ``break_even`` is None for the fine-tuned row;
    ``horizon_cost`` is the one-off cost plus the monthly cost over the horizon."""

    option: Option
    cost_per_request: Decimal
    monthly_cost: Decimal
    horizon_cost: Decimal
    break_even: BreakEven | None

    @property
    def name(self) -> str:
        return self.option.name

    @property
    def quality(self) -> float:
        return self.option.quality

    @property
    def vs_fine_tuned(self) -> Decision | None:
        return self.option.vs_fine_tuned

    @property
    def one_off_cost(self) -> Decimal:
        return self.option.one_off_usd

    @property
    def payback_months(self) -> Decimal | None:
        return None if self.break_even is None else self.break_even.payback_months

    @property
    def payback(self) -> str:
        """When the training cost is repaid against this option, in words; "" for the
        fine-tuned row itself."""
        return "" if self.break_even is None else payback_in_words(self.break_even)


@dataclass(frozen=True)
class TargetCheck:
    """The best option's quality against the quality target a lead set for the task: the
    score a model must reach to be good enough at all, on the metric the advice weighs."""

    target: float
    best: str
    best_quality: float
    best_interval: tuple[float, float] | None

    @property
    def met(self) -> bool:
        return _at_least(self.best_quality, self.target)

    @property
    def interval_reaches_target(self) -> bool:
        """Whether the best option's interval reaches the target although its score does not:
        a larger evaluation set could still find it good enough."""
        return self.best_interval is not None and _at_least(self.best_interval[1], self.target)


def target_check(options: Sequence[Option], quality_target: float | None) -> TargetCheck | None:
    """The best of ``options`` (highest quality; the first of equals) against the target; None
    without a target. The target is a score in (0, 1], as the dataset stores it."""
    if quality_target is None:
        return None
    if not math.isfinite(quality_target) or not 0 < quality_target <= 1:
        raise ValueError(f"quality_target must be in (0, 1], got {quality_target}")
    if not options:
        raise ValueError("a target is checked against at least one option")
    best = max(options, key=lambda option: option.quality)
    return TargetCheck(
        target=quality_target,
        best=best.name,
        best_quality=best.quality,
        best_interval=best.quality_interval,
    )


@dataclass(frozen=True)
class Advice:
    rows: tuple[AdviceRow, ...]
    pitfalls: tuple[Pitfall, ...]
    recommendation: str
    monthly_requests: int
    horizon_months: int
    rule: str = RULE
    target: TargetCheck | None = None

    @property
    def pitfall_codes(self) -> tuple[PitfallCode, ...]:
        return tuple(pitfall.code for pitfall in self.pitfalls)


def _row(option: Option, fine_tuned: Option, monthly_requests: int, horizon: int) -> AdviceRow:
    monthly = monthly_cost(option, monthly_requests)
    return AdviceRow(
        option=option,
        cost_per_request=cost_per_request(option),
        monthly_cost=monthly,
        horizon_cost=option.one_off_usd + monthly * horizon,
        break_even=None
        if option.is_fine_tuned
        else break_even(
            fine_tuned, option, monthly_requests=monthly_requests, horizon_months=horizon
        ),
    )


def _the_fine_tuned(options: Sequence[Option]) -> Option:
    fine_tuned = [option for option in options if option.is_fine_tuned]
    if len(fine_tuned) != 1:
        raise ValueError(f"advise needs exactly one fine-tuned option, got {len(fine_tuned)}")
    names = [option.name for option in options]
    if len(set(names)) != len(names):
        raise ValueError("option names must be distinct: the table is read by name")
    return fine_tuned[0]


DAYS_PER_MONTH = Decimal("30.4")  # 365 / 12


def payback_in_words(result: BreakEven) -> str:
    """When the fine-tuned option's training cost is repaid, as people say it: "cheaper from
    the first request: nothing to pay back", "pays for itself immediately", "... after about
    11 days", "... after about 4 months", "... after about 2 years", or "never pays for itself
    at this volume"."""
    if result.status == "cheaper_from_first_request":
        return "cheaper from the first request: nothing to pay back"
    months = result.payback_months
    if months is None:
        return "never pays for itself at this volume"
    days = months * DAYS_PER_MONTH
    if days < 1:
        return "pays for itself immediately"
    if months < 1:
        count = round(days)
        return f"pays for itself after about {count} day{'s' if count != 1 else ''}"
    if months < 24:
        count = round(months)
        return f"pays for itself after about {count} month{'s' if count != 1 else ''}"
    return f"pays for itself after about {round(months / 12)} years"


Compared = tuple[AdviceRow, Decision]


def _training_doubts(pitfalls: Sequence[Pitfall]) -> str:
    return " and ".join(
        pitfall.title.lower() for pitfall in pitfalls if pitfall.code in _DOUBTFUL_TRAINING
    )


def _material_saving(saving: Decimal, prompt_bill: Decimal) -> bool:
    return saving >= MATERIAL_SAVINGS_USD and saving >= MATERIAL_SAVINGS_SHARE * prompt_bill


def _recommend_between_equals(
    fine_tuned: AdviceRow,
    as_good: Sequence[Compared],
    pitfalls: Sequence[Pitfall],
    context: _Context,
) -> str:
    # Quality first: no option here is better than the fine-tuned model by the rule, nor the
    # fine-tuned model better than them, so the prompt (simpler to change) is the answer unless
    # fine-tuning saves a material amount over the horizon, training included (see
    # MATERIAL_SAVINGS_*). A dataset that keeps changing makes the training cost recur (the
    # horizon cost counts one run), so then the prompt wins too.
    cheapest, decision = min(as_good, key=lambda pair: pair[0].horizon_cost)
    verdict = context.verdict(fine_tuned.name, cheapest.name, decision)
    costs = (
        f"over {context.horizon} months {fine_tuned.name} costs "
        f"{_usd(fine_tuned.horizon_cost)} with training, {cheapest.name} "
        f"{_usd(cheapest.horizon_cost)}"
    )
    saving = cheapest.horizon_cost - fine_tuned.horizon_cost
    changing = any(pitfall.code == "requirements_change_often" for pitfall in pitfalls)
    if _material_saving(saving, cheapest.horizon_cost) and not changing:
        doubts = _training_doubts(pitfalls)
        if doubts:
            return (
                f"Not enough evidence yet: {verdict} and {costs}, but the training shows "
                f"{doubts}; fix that and evaluate again before relying on the fine-tuned model."
            )
        payback = payback_in_words(cheapest.break_even) if cheapest.break_even else ""
        return f"Fine-tune to save money, not for quality: {verdict}, but {costs}; it {payback}."
    if changing:
        reason = "and the dataset keeps changing, so each change would mean retraining"
    elif saving > 0:
        reason = (
            f"and would save only {_usd(saving)}, too little to outweigh retraining and "
            "re-evaluating it whenever the task changes"
        )
    else:
        reason = "and saves no money"
    return f"Prompt: {verdict}; {costs}: fine-tuning buys no measured quality {reason}."


def _recommend_the_winner(
    fine_tuned: AdviceRow,
    evaluated: Sequence[Compared],
    pitfalls: Sequence[Pitfall],
    context: _Context,
) -> str:
    # The fine-tuned model beats every alternative: report the closest one.
    closest, decision = min(evaluated, key=lambda pair: pair[1].comparison.difference)
    verdict = context.verdict(fine_tuned.name, closest.name, decision)
    doubts = _training_doubts(pitfalls)
    if doubts:
        return (
            f"Not enough evidence yet: {verdict}, but the training shows {doubts}; "
            "fix that and evaluate again before relying on the gain."
        )
    extra = fine_tuned.monthly_cost - closest.monthly_cost
    if extra > 0:
        running = f"it costs {_usd(extra)} a month more to run than {closest.name}"
    elif extra < 0:
        running = f"it costs {_usd(-extra)} a month less to run than {closest.name}"
    else:
        running = f"it costs the same to run as {closest.name}"
    caveat = (
        "; the dataset keeps changing, so budget for retraining"
        if any(pitfall.code == "requirements_change_often" for pitfall in pitfalls)
        else ""
    )
    return f"Fine-tune: {verdict}; {running}{caveat}."


@dataclass(frozen=True)
class _Context:
    metric_label: str
    points: bool
    horizon: int

    def verdict(self, fine_tuned: str, alternative: str, decision: Decision) -> str:
        return decision.sentence(fine_tuned, alternative, self.metric_label, self.points)

    def score(self, value: float) -> str:
        # As the evaluation pages show a mean: fractions in points, with one decimal.
        return f"{value * 100:.1f} %" if self.points else f"{value:.3g}"


def _neither_good_enough(check: TargetCheck, context: _Context) -> str:
    # Checked before any comparison: whichever option wins, it would be wrong too often to
    # ship, and recommending it (fine-tuned or prompted) would hide that.
    interval = ""
    if check.best_interval is not None:
        low, high = check.best_interval
        reaches = (
            ", which reaches the target: a larger evaluation set may yet show it good enough"
            if check.interval_reaches_target
            else ""
        )
        interval = f" (95 % CI {context.score(low)} to {context.score(high)}{reaches})"
    return (
        f"Neither option is good enough: the best, {check.best}, scores "
        f"{context.score(check.best_quality)} {context.metric_label}{interval}, below the "
        f"target of {context.score(check.target)} set for this task. Neither fine-tuning as "
        "trained nor prompting reaches it; improve the data (see the pitfalls) or the "
        "training and evaluate again before deploying either."
    )


def _recommend(
    fine_tuned: AdviceRow,
    alternatives: Sequence[AdviceRow],
    pitfalls: Sequence[Pitfall],
    context: _Context,
) -> str:
    evaluated = [(row, row.vs_fine_tuned) for row in alternatives if row.vs_fine_tuned is not None]
    if not evaluated:
        return (
            "Not enough evidence yet: no prompting option was scored on the same examples as "
            f"{fine_tuned.name}; evaluate few-shot prompting of the base model side by side."
        )
    # Quality first: an option better than the fine-tuned model by the rule wins, the cheapest
    # of them if several are.
    better = [(row, d) for row, d in evaluated if d.outcome == VerdictOutcome.WORSE]
    if better:
        winner, decision = min(better, key=lambda pair: pair[0].horizon_cost)
        verdict = context.verdict(fine_tuned.name, winner.name, decision)
        return f"Prompt: {verdict}; fine-tuning as trained costs quality."
    # An option the fine-tuned model does not beat by the rule is as good, as far as we know.
    as_good = [
        (row, decision) for row, decision in evaluated if decision.outcome != VerdictOutcome.BETTER
    ]
    if as_good:
        return _recommend_between_equals(fine_tuned, as_good, pitfalls, context)
    unevaluated = [row.name for row in alternatives if row.vs_fine_tuned is None]
    if unevaluated:
        return (
            f"Not enough evidence yet: {fine_tuned.name} beats every evaluated option, but "
            f"{', '.join(unevaluated)} was not scored on the same examples."
        )
    return _recommend_the_winner(fine_tuned, evaluated, pitfalls, context)


def advise(
    options: Sequence[Option],
    *,
    monthly_requests: int,
    horizon_months: int,
    training_examples: int,
    train_loss: float | None,
    val_loss: float | None,
    version_history: Sequence[DatasetVersionChange],
    now: datetime | None = None,
    metric_label: str = "quality",
    points: bool = True,
    training_label_counts: Mapping[str, int] | None = None,
    quality_target: float | None = None,
) -> Advice:
    """The side-by-side table, the pitfalls that apply, and one recommendation sentence.

    ``options`` holds exactly one fine-tuned option (its ``one_off_usd`` is the training cost)
    and any number of prompting options, each with its paired comparison against it. The
    recommendation, in order:

    * "Neither option is good enough" when a ``quality_target`` is given and even the best
      option's quality is below it (before any of the rest: no comparison makes it good);
    * "Not enough evidence yet" when no option was compared on the same examples;
    Verdicts follow the one decision rule (:func:`evaluation.statistics.decide`), quality
    first:

    * "Prompt" when some option is better than the fine-tuned model by the rule;
    * when some option is as good (no significant difference, or borderline), the cheapest
      such option over the horizon is set against the fine-tuned one (with training): "Prompt",
      unless fine-tuning saves a material amount (:data:`MATERIAL_SAVINGS_SHARE` of the
      prompt's bill and at least :data:`MATERIAL_SAVINGS_USD`) and the dataset is not changing
      often: then "Fine-tune to save money, not for quality";
    * "Not enough evidence yet" when the fine-tuned model beats every evaluated option but some
      option was not evaluated;
    * whenever the answer would be "Fine-tune" but the training shows insufficient data or
      overfitting, "Not enough evidence yet" instead: the measured gain may not hold on new
      inputs;
    * "Fine-tune" otherwise, with the gain over the closest option and the running cost.
    """
    fine_tuned = _the_fine_tuned(options)
    rows = tuple(_row(option, fine_tuned, monthly_requests, horizon_months) for option in options)
    fine_tuned_row = next(row for row in rows if row.option.is_fine_tuned)
    alternatives = [row for row in rows if not row.option.is_fine_tuned]
    found: list[Pitfall | None] = [
        prompting_is_enough(fine_tuned, row.option, metric_label=metric_label, points=points)
        for row in alternatives
    ]
    found.append(insufficient_data(training_examples, training_label_counts))
    found.append(overfitting(train_loss=train_loss, val_loss=val_loss))
    found.append(
        requirements_change_often(
            version_history,
            now=now if now is not None else datetime.now(UTC),
            retraining_cost=fine_tuned.one_off_usd,
        )
    )
    pitfalls = tuple(pitfall for pitfall in found if pitfall is not None)
    context = _Context(metric_label, points, horizon_months)
    target = target_check(options, quality_target)
    return Advice(
        rows=rows,
        pitfalls=pitfalls,
        recommendation=(
            _neither_good_enough(target, context)
            if target is not None and not target.met
            else _recommend(fine_tuned_row, alternatives, pitfalls, context)
        ),
        monthly_requests=monthly_requests,
        horizon_months=horizon_months,
        target=target,
    )
