"""Comparing two candidates scored on the same examples, and saying what the comparison means.

Every function takes per-example scores in the same order for both candidates (example i of
``a`` is example i of ``b``), because pairing removes the variation between examples, which is
usually far larger than the difference between candidates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction

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


@dataclass(frozen=True)
class DiscordantTest:
    """Result of a sign test or McNemar's test: only examples where the candidates differ count."""

    a_better: int
    b_better: int
    p_value: float


def sign_test(a: Sequence[float], b: Sequence[float], tolerance: float = 0.0) -> DiscordantTest:
    """Exact sign test on per-example scores: are wins and losses as likely as each other?

    Ties (within ``tolerance``) are dropped, the standard treatment.
    """
    counts = wins_ties_losses(a, b, tolerance)
    return DiscordantTest(
        a_better=counts.wins,
        b_better=counts.losses,
        p_value=binomial_two_sided_p(counts.wins, counts.wins + counts.losses),
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
        a_better=only_a, b_better=only_b, p_value=binomial_two_sided_p(only_a, only_a + only_b)
    )


# ---------------------------------------------------------------------------
# Plain-English verdicts
# ---------------------------------------------------------------------------


def _format_amount(value: float, points: bool) -> str:
    # Points: one decimal of x 100. Otherwise three significant figures in the metric's own unit.
    text = f"{value * 100:.1f}" if points else f"{value:.3g}"
    return "0.0" if points and text == "-0.0" else ("0" if text == "-0" else text)


def verdict_sentence(
    name_a: str,
    name_b: str,
    metric_label: str,
    comparison: PairedComparison,
    points: bool = True,
    *,
    higher_is_better: bool = True,
) -> str:
    """One sentence saying whether ``name_a`` beats ``name_b`` on a metric, and by how much.

    ``points`` says the scores are fractions in [0, 1], reported as points (x 100, one
    decimal). The verdict follows the confidence interval: when it contains 0 there is no
    significant difference. A worse candidate's gap and interval are reported as positive
    amounts it falls short by. ``higher_is_better=False`` is for metrics like latency.
    """

    def amount(value: float) -> str:
        return _format_amount(value, points)

    level = f"{comparison.confidence * 100:g} % CI"
    unit = " points" if points else ""
    low, high = comparison.ci_low, comparison.ci_high
    if not comparison.significant:
        return (
            f"no significant difference between {name_a} and {name_b} on {metric_label} "
            f"(difference {amount(comparison.difference)}{unit}, "
            f"{level} {amount(low)} to {amount(high)})"
        )
    a_is_better = (comparison.difference > 0) == higher_is_better
    verb = "beats" if a_is_better else "is worse than"
    gap = abs(comparison.difference)
    # Report the gap as a positive amount, so flip the interval when the difference is negative.
    if comparison.difference < 0:
        low, high = -high, -low
    return (
        f"{name_a} {verb} {name_b} by {amount(gap)}{unit} {metric_label} "
        f"({level} {amount(low)} to {amount(high)})"
    )


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
