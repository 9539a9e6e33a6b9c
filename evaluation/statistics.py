"""Comparing two candidates scored on the same examples, and saying what the comparison means.

Every function takes per-example scores in the same order for both candidates (example i of
``a`` is example i of ``b``), because pairing removes the variation between examples, which is
usually far larger than the difference between candidates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

# Resamples are drawn in blocks of about this many indices, so 10,000 x 100,000 examples does
# not need 8 GB at once; the block size depends only on the data, so results stay reproducible.
_BOOTSTRAP_BLOCK_ELEMENTS = 2_000_000


def _paired_arrays(
    a: Sequence[float], b: Sequence[float]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if len(a) != len(b):
        raise ValueError(
            "paired comparison needs scores for the same examples, "
            f"got {len(a)} scores for a and {len(b)} for b"
        )
    if len(a) == 0:
        raise ValueError("paired comparison needs at least one example")
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        raise ValueError("scores must be finite numbers (no NaN or infinity)")
    return first, second


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`paired_bootstrap`; ``difference`` and the interval are ``a - b``."""

    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    examples: int
    resamples: int

    @property
    def significant(self) -> bool:
        """Whether the confidence interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def _bootstrap_means(
    differences: npt.NDArray[np.float64], resamples: int, seed: int
) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    count = len(differences)
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // count)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        indices = rng.integers(0, count, size=(stop - start, count))
        means[start:stop] = differences[indices].mean(axis=1)
    return means


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """Paired bootstrap of the mean difference ``a - b`` over the same examples.

    Each resample draws n examples with replacement (the same draw for both candidates) and
    takes the mean per-example difference. The confidence interval is the percentile interval
    of those means. The p-value is the two-sided bootstrap test under the shifted null
    (Efron & Tibshirani 1993, ch. 16): centre the bootstrap means on zero and count how often
    they land at least as far from zero as the observed difference, with the +1 correction so it
    is never 0: p = (1 + #{|m* - d| >= |d|}) / (1 + resamples). Same inputs and seed give the
    same result.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    first, second = _paired_arrays(a, b)
    differences = first - second
    observed = float(differences.mean())
    means = _bootstrap_means(differences, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    ci_low, ci_high = np.percentile(means, [tail, 100 - tail])
    # A tiny tolerance so float noise in resampled means of identical values does not decide.
    at_least_as_extreme = np.abs(means - observed) >= abs(observed) - 1e-12
    p_value = (1 + int(at_least_as_extreme.sum())) / (1 + resamples)
    return PairedComparison(
        mean_a=float(first.mean()),
        mean_b=float(second.mean()),
        difference=observed,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_value=p_value,
        confidence=confidence,
        examples=len(differences),
        resamples=resamples,
    )


@dataclass(frozen=True)
class WinsTiesLosses:
    wins: int
    ties: int
    losses: int


def wins_ties_losses(
    a: Sequence[float], b: Sequence[float], tolerance: float = 0.0
) -> WinsTiesLosses:
    """Per example: a wins when it beats b by more than ``tolerance``, loses when b beats it by
    more than ``tolerance``, and ties otherwise."""
    if tolerance < 0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    first, second = _paired_arrays(a, b)
    differences = first - second
    wins = int((differences > tolerance).sum())
    losses = int((differences < -tolerance).sum())
    return WinsTiesLosses(wins=wins, ties=len(differences) - wins - losses, losses=losses)


def binomial_two_sided_p(successes: int, trials: int) -> float:
    """Exact two-sided binomial test p-value against a fair coin (p = 1/2).

    For a fair coin the distribution is symmetric, so the two-sided p-value is twice the smaller
    tail, P(X <= min(k, n - k)), capped at 1. Computed with exact integers. 1 when trials = 0.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 1.0
    smaller = min(successes, trials - successes)
    # Sum C(n, 0..k) with the exact recurrence C(n, k+1) = C(n, k) (n - k) / (k + 1): one big-int
    # step per term instead of a fresh math.comb each time.
    term = tail = 1
    for k in range(smaller):
        term = term * (trials - k) // (k + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**trials)))


MCNEMAR = "McNemar exact"
SIGN_TEST = "sign test"


@dataclass(frozen=True)
class DiscordantTest:
    """Result of a sign test or McNemar's test: only examples where the candidates differ count.
    ``name`` is the test's name as people read it ("McNemar exact", "sign test")."""

    a_better: int
    b_better: int
    p_value: float
    name: str = SIGN_TEST


def sign_test(a: Sequence[float], b: Sequence[float], tolerance: float = 0.0) -> DiscordantTest:
    """Exact sign test on per-example scores: are wins and losses as likely as each other?

    Ties (within ``tolerance``) are dropped, the standard treatment.
    """
    counts = wins_ties_losses(a, b, tolerance)
    return DiscordantTest(
        a_better=counts.wins,
        b_better=counts.losses,
        p_value=binomial_two_sided_p(counts.wins, counts.wins + counts.losses),
        name=SIGN_TEST,
    )


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> DiscordantTest:
    """McNemar's exact test for a binary metric (e.g. exact match) on the same examples.

    Counts the examples only a got right and those only b got right; under the null the two are
    equally likely, so the exact binomial test on those discordant pairs gives the p-value.
    """
    first, second = _paired_arrays([float(x) for x in a], [float(x) for x in b])
    if not np.isin(first, (0.0, 1.0)).all() or not np.isin(second, (0.0, 1.0)).all():
        raise ValueError("McNemar's test needs binary outcomes (True/False or 1/0)")
    only_a = int(((first == 1) & (second == 0)).sum())
    only_b = int(((first == 0) & (second == 1)).sum())
    return DiscordantTest(
        a_better=only_a,
        b_better=only_b,
        p_value=binomial_two_sided_p(only_a, only_a + only_b),
        name=MCNEMAR,
    )


# ---------------------------------------------------------------------------
# The decision rule, and verdicts in plain English
# ---------------------------------------------------------------------------


class VerdictOutcome(StrEnum):
    """What a paired comparison says about candidate a against candidate b."""

    BETTER = "better"
    WORSE = "worse"
    NO_DIFFERENCE = "no_difference"
    BORDERLINE = "borderline"

    @property
    def label(self) -> str:
        return _OUTCOME_LABELS[self]


_OUTCOME_LABELS = {
    VerdictOutcome.BETTER: "better",
    VerdictOutcome.WORSE: "worse",
    VerdictOutcome.NO_DIFFERENCE: "no significant difference",
    VerdictOutcome.BORDERLINE: "borderline",
}

RULE = (
    "Rule: a difference counts when the 95 % paired bootstrap CI excludes 0 and the paired "
    "test (McNemar exact for pass/fail metrics, the sign test for graded ones) has p < 0.05; "
    "when only one of the two says so, the verdict is borderline."
)


def _format_amount(value: float, points: bool) -> str:
    # Points: one decimal of x 100. Otherwise three significant figures in the metric's own unit.
    text = f"{value * 100:.1f}" if points else f"{value:.3g}"
    return "0.0" if points and text == "-0.0" else ("0" if text == "-0" else text)


def _format_p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


@dataclass(frozen=True)
class Decision:
    """The one rule's verdict on a paired comparison of a with b (made by :func:`decide`)."""

    outcome: VerdictOutcome
    comparison: PairedComparison
    test: DiscordantTest
    higher_is_better: bool = True

    @property
    def alpha(self) -> float:
        # Rounded so that 1 - 0.95 is 0.05, not 0.050000000000000044 (p = 0.05 is not below it).
        return round(1 - self.comparison.confidence, 10)

    @property
    def interval_excludes_zero(self) -> bool:
        return self.comparison.significant

    @property
    def test_is_significant(self) -> bool:
        return self.test.p_value < self.alpha

    @property
    def rule(self) -> str:
        """This verdict's rule in one line, e.g. "Rule: 95 % paired bootstrap CI excludes 0
        and McNemar exact p < 0.05"."""
        return (
            f"Rule: {self.comparison.confidence * 100:g} % paired bootstrap CI excludes 0 and "
            f"{self.test.name} p < {self.alpha:g}"
        )

    @property
    def is_difference(self) -> bool:
        """Whether the rule says the two differ (better or worse), not merely perhaps."""
        return self.outcome in (VerdictOutcome.BETTER, VerdictOutcome.WORSE)

    def swapped(self) -> Decision:
        """The same evidence read the other way round: the decision on b against a."""
        c = self.comparison
        comparison = PairedComparison(
            mean_a=c.mean_b,
            mean_b=c.mean_a,
            difference=-c.difference,
            ci_low=-c.ci_high,
            ci_high=-c.ci_low,
            p_value=c.p_value,
            confidence=c.confidence,
            examples=c.examples,
            resamples=c.resamples,
        )
        test = DiscordantTest(
            self.test.b_better, self.test.a_better, self.test.p_value, self.test.name
        )
        return decide(comparison, test, higher_is_better=self.higher_is_better)

    def no_worse_than(self, margin: float) -> bool:
        """Whether a is at most ``margin`` worse than b (in the metric's own unit, 0.02 = 2
        points): the worse end of the interval of a - b stays within the margin. Better is
        always no worse; a significant loss (by the rule) never is, whatever the margin."""
        if margin < 0:
            raise ValueError(f"margin must not be negative, got {margin}")
        if self.outcome == VerdictOutcome.BETTER:
            return True
        if self.outcome == VerdictOutcome.WORSE:
            return False
        worse_end = self.comparison.ci_low if self.higher_is_better else -self.comparison.ci_high
        return worse_end >= -margin

    @property
    def test_text(self) -> str:
        """The paired test's name and p-value, e.g. "McNemar exact p = 0.070"."""
        return f"{self.test.name} p {_format_p(self.test.p_value)}"

    def sentence(self, name_a: str, name_b: str, metric_label: str, points: bool = True) -> str:
        """One sentence saying whether ``name_a`` beats ``name_b`` on a metric, by how much and
        how sure: better, worse, no significant difference, or borderline with the reason.

        ``points`` says the scores are fractions in [0, 1], reported as points (x 100, one
        decimal). A worse candidate's gap and interval are reported as positive amounts."""

        def amount(value: float) -> str:
            return _format_amount(value, points)

        comparison = self.comparison
        level = f"{comparison.confidence * 100:g} % CI"
        unit = " points" if points else ""
        low, high = comparison.ci_low, comparison.ci_high
        interval = f"{level} {amount(low)} to {amount(high)}"
        if self.outcome == VerdictOutcome.NO_DIFFERENCE:
            return (
                f"no significant difference between {name_a} and {name_b} on {metric_label} "
                f"(difference {amount(comparison.difference)}{unit}, {interval}; "
                f"{self.test_text})"
            )
        if self.outcome == VerdictOutcome.BORDERLINE:
            ahead = "higher" if comparison.difference >= 0 else "lower"
            if not self.interval_excludes_zero:
                why = (
                    f"({interval}, which includes 0), but {self.test_text} is below {self.alpha:g}"
                )
            elif self.test_is_significant:
                favoured = name_a if self.test.a_better > self.test.b_better else name_b
                why = (
                    f"({interval}, which excludes 0), but {self.test.name} counts more items "
                    f"where {favoured} did better (p {_format_p(self.test.p_value)})"
                )
            else:
                why = (
                    f"({interval}, which excludes 0), but {self.test_text} "
                    f"is not below {self.alpha:g}"
                )
            return (
                f"borderline between {name_a} and {name_b} on {metric_label}: {name_a} scores "
                f"{amount(abs(comparison.difference))}{unit} {ahead} {why}"
            )
        verb = "beats" if self.outcome == VerdictOutcome.BETTER else "is worse than"
        # Report the gap as a positive amount, so flip the interval when the difference is
        # negative.
        if comparison.difference < 0:
            low, high = -high, -low
        return (
            f"{name_a} {verb} {name_b} by {amount(abs(comparison.difference))}{unit} "
            f"{metric_label} ({level} {amount(low)} to {amount(high)}; {self.test_text})"
        )


def decide(
    comparison: PairedComparison, test: DiscordantTest, *, higher_is_better: bool = True
) -> Decision:
    """The one decision rule for every verdict in the product (evaluation pages, checkpoint
    sweeps, the advisor, the promotion gate).

    ``comparison`` is :func:`paired_bootstrap` of a against b and ``test`` the paired test on
    the same examples (:func:`mcnemar_exact` for pass/fail metrics, :func:`sign_test`
    otherwise). A difference counts only when both agree at the same level: the bootstrap
    interval excludes 0 and the test's p-value is below 1 - confidence, in the same direction.
    Then a is BETTER or WORSE (``higher_is_better=False`` for metrics such as latency). When
    neither says so: NO_DIFFERENCE. When only one does (or they point different ways):
    BORDERLINE, never "beats"; :meth:`Decision.sentence` says why.
    """
    decision = Decision(VerdictOutcome.NO_DIFFERENCE, comparison, test, higher_is_better)
    interval, tested = decision.interval_excludes_zero, decision.test_is_significant
    if not interval and not tested:
        return decision
    # The test counts examples where a did better and where b did, in the scores' own order.
    same_direction = (test.a_better > test.b_better) == (comparison.difference > 0)
    if interval and tested and same_direction:
        a_is_better = (comparison.difference > 0) == higher_is_better
        outcome = VerdictOutcome.BETTER if a_is_better else VerdictOutcome.WORSE
        return Decision(outcome, comparison, test, higher_is_better)
    return Decision(VerdictOutcome.BORDERLINE, comparison, test, higher_is_better)


def verdict_sentence(
    name_a: str, name_b: str, metric_label: str, decision: Decision, points: bool = True
) -> str:
    """The decision as one sentence; see :meth:`Decision.sentence`."""
    return decision.sentence(name_a, name_b, metric_label, points)


# ---------------------------------------------------------------------------
# Unpaired comparisons: two groups of different requests (an experiment's arms)
# ---------------------------------------------------------------------------
#
# An experiment's arms answer different requests, so nothing pairs; rates get Wilson
# intervals, a rate difference Newcombe's hybrid score interval with the pooled two-proportion
# z-test beside it, and the verdict is the same rule as :func:`decide`: a difference counts
# only when the interval and the test agree.


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(
    successes: int, trials: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / trials`` (good at small counts and at
    rates near 0 or 1, where the normal interval leaves [0, 1]). (0, 1) when trials = 0."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    z = _z(confidence)
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or all successes the bound is exactly 0 or 1 (float noise would leave 1e-17).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def mean_interval(
    count: int, mean: float, variance: float, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Normal interval of a mean from its count, mean and sample variance (what SQL's AVG
    and VAR_SAMP give, so no row leaves the database): mean +/- z * sqrt(variance / count).
    With one value the interval is the value itself; with none, ValueError."""
    if count < 1:
        raise ValueError("a mean's interval needs at least one value")
    if variance < 0 or not math.isfinite(variance) or not math.isfinite(mean):
        raise ValueError("mean and variance must be finite, the variance not negative")
    half = _z(confidence) * math.sqrt(variance / count)
    return mean - half, mean + half


@dataclass(frozen=True)
class RateComparison:
    """Result of :func:`compare_rates`; ``difference`` and the interval are ``a - b``."""

    successes_a: int
    trials_a: int
    successes_b: int
    trials_b: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float

    @property
    def rate_a(self) -> float:
        return self.successes_a / self.trials_a

    @property
    def rate_b(self) -> float:
        return self.successes_b / self.trials_b


RATE_TEST = "two-proportion z-test"


def compare_rates(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, *, confidence: float = 0.95
) -> RateComparison:
    """Two rates from different trials: the difference a - b with Newcombe's hybrid score
    interval (method 10, built from each rate's Wilson interval) and the pooled two-proportion
    z-test's two-sided p-value (1 when both rates are 0 or both 1: nothing to tell apart)."""
    if trials_a < 1 or trials_b < 1:
        raise ValueError("comparing rates needs at least one trial on each side")
    low_a, high_a = wilson_interval(successes_a, trials_a, confidence=confidence)
    low_b, high_b = wilson_interval(successes_b, trials_b, confidence=confidence)
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    difference = rate_a - rate_b
    ci_low = difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2)
    ci_high = difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2)
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    p_value = 1.0 if spread == 0 else 2 * (1 - NormalDist().cdf(abs(difference) / spread))
    return RateComparison(
        successes_a=successes_a,
        trials_a=trials_a,
        successes_b=successes_b,
        trials_b=trials_b,
        difference=difference,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=min(1.0, p_value),
        confidence=confidence,
    )


@dataclass(frozen=True)
class RateDecision:
    """The one rule (:func:`decide`) read on two unpaired rates: a is better or worse only
    when the interval of a - b excludes 0 and the z-test agrees; neither: no significant
    difference; only one: borderline."""

    outcome: VerdictOutcome
    comparison: RateComparison

    @property
    def alpha(self) -> float:
        return round(1 - self.comparison.confidence, 10)

    @property
    def rule(self) -> str:
        return (
            f"Rule: {self.comparison.confidence * 100:g} % CI of the difference (Newcombe) "
            f"excludes 0 and the {RATE_TEST} p < {self.alpha:g}"
        )

    def sentence(self, name_a: str, name_b: str, metric_label: str) -> str:
        """One sentence in the words of :meth:`Decision.sentence`, with rates in points."""
        c = self.comparison
        level = f"{c.confidence * 100:g} % CI"
        test = f"{RATE_TEST} p {_format_p(c.p_value)}"
        interval = f"{level} {_format_amount(c.ci_low, True)} to {_format_amount(c.ci_high, True)}"
        if self.outcome == VerdictOutcome.NO_DIFFERENCE:
            return (
                f"no significant difference between {name_a} and {name_b} on {metric_label} "
                f"(difference {_format_amount(c.difference, True)} points, {interval}; {test})"
            )
        if self.outcome == VerdictOutcome.BORDERLINE:
            ahead = "higher" if c.difference >= 0 else "lower"
            excluded = c.ci_low > 0 or c.ci_high < 0
            why = (
                f"({interval}, which excludes 0), but {test} is not below {self.alpha:g}"
                if excluded
                else f"({interval}, which includes 0), but {test} is below {self.alpha:g}"
            )
            return (
                f"borderline between {name_a} and {name_b} on {metric_label}: {name_a} scores "
                f"{_format_amount(abs(c.difference), True)} points {ahead} {why}"
            )
        verb = "beats" if self.outcome == VerdictOutcome.BETTER else "is worse than"
        low, high = (c.ci_low, c.ci_high) if c.difference >= 0 else (-c.ci_high, -c.ci_low)
        return (
            f"{name_a} {verb} {name_b} by {_format_amount(abs(c.difference), True)} points "
            f"{metric_label} ({level} {_format_amount(low, True)} to "
            f"{_format_amount(high, True)}; {test})"
        )


def decide_rates(comparison: RateComparison) -> RateDecision:
    """The decision rule of :func:`decide` on an unpaired rate comparison (higher is better)."""
    interval = comparison.ci_low > 0 or comparison.ci_high < 0
    tested = comparison.p_value < round(1 - comparison.confidence, 10)
    if not interval and not tested:
        return RateDecision(VerdictOutcome.NO_DIFFERENCE, comparison)
    if interval and tested:
        better = comparison.difference > 0
        return RateDecision(VerdictOutcome.BETTER if better else VerdictOutcome.WORSE, comparison)
    return RateDecision(VerdictOutcome.BORDERLINE, comparison)


# ---------------------------------------------------------------------------
# Agreement between two raters (judge vs humans)
# ---------------------------------------------------------------------------


def _check_ratings(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> None:
    if len(labels_a) != len(labels_b):
        raise ValueError(
            f"agreement needs both raters on the same items, got {len(labels_a)} and "
            f"{len(labels_b)} labels"
        )
    if not labels_a:
        raise ValueError("agreement needs at least one rated item")


def percent_agreement(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Fraction of items (0..1, x 100 for a percentage) on which both raters gave the same label."""
    _check_ratings(labels_a, labels_b)
    return sum(x == y for x, y in zip(labels_a, labels_b, strict=True)) / len(labels_a)


def cohens_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's kappa: agreement beyond what the raters' label frequencies give by chance.

    kappa = (p_o - p_e) / (1 - p_e), with p_o the observed agreement and p_e = sum over labels
    of the product of each rater's share of that label. 1 is perfect, 0 chance level, negative
    worse than chance. When both raters used one and the same label throughout, p_e = 1 and
    kappa is undefined; that is perfect agreement, so 1.0 is returned.
    """
    observed = percent_agreement(labels_a, labels_b)
    count = len(labels_a)
    shares_a, shares_b = Counter(labels_a), Counter(labels_b)
    expected = sum(shares_a[label] * shares_b[label] for label in shares_a) / (count * count)
    if expected == 1:
        return 1.0
    return (observed - expected) / (1 - expected)
