"""Unpaired statistics for an experiment's arms: Wilson intervals, a mean's interval from SQL
aggregates, Newcombe's interval of a rate difference with the z-test, and the one rule's
verdict on them. Reference values are from the published worked examples."""

from __future__ import annotations

import math

import pytest

from evaluation.statistics import (
    VerdictOutcome,
    compare_rates,
    decide_rates,
    mean_interval,
    wilson_interval,
)


def test_wilson_interval_matches_the_published_values() -> None:
    # Newcombe (1998), Table I: 81/263 gives 0.2553 to 0.3662; 15/148 gives 0.0624 to 0.1605.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148)
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)


def test_wilson_interval_stays_in_zero_to_one_at_the_edges() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 1
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(3, 2)


def test_mean_interval_is_the_normal_interval_of_the_aggregates() -> None:
    low, high = mean_interval(100, 0.7, 0.04)
    half = 1.959963984540054 * math.sqrt(0.04 / 100)
    assert low == pytest.approx(0.7 - half) and high == pytest.approx(0.7 + half)
    assert mean_interval(1, 0.5, 0.0) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval(0, 0.0, 0.0)


def test_newcombe_interval_of_a_difference_matches_the_published_example() -> None:
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.2, method 10: 0.0524 to 0.3339.
    comparison = compare_rates(56, 70, 48, 80)
    assert comparison.difference == pytest.approx(0.2)
    assert (round(comparison.ci_low, 4), round(comparison.ci_high, 4)) == (0.0524, 0.3339)
    # Pooled z-test: z = 0.2 / sqrt(p(1-p)(1/70+1/80)) with p = 104/150, about 2.63.
    assert comparison.p_value == pytest.approx(0.0085, abs=0.0005)


def test_the_rule_needs_the_interval_and_the_test_to_agree() -> None:
    clear = decide_rates(compare_rates(60, 100, 40, 100))
    assert clear.outcome == VerdictOutcome.BETTER
    assert clear.sentence("B", "A", "resolved success rate").startswith(
        "B beats A by 20.0 points resolved success rate (95 % CI 6.1 to 32.8; "
        "two-proportion z-test p = 0.005)"
    )
    worse = decide_rates(compare_rates(40, 100, 60, 100))
    assert worse.outcome == VerdictOutcome.WORSE
    assert worse.sentence("A", "B", "rate").startswith("A is worse than B by 20.0 points")
    unsure = decide_rates(compare_rates(6, 10, 4, 10))
    assert unsure.outcome == VerdictOutcome.NO_DIFFERENCE
    assert unsure.sentence("A", "B", "rate").startswith("no significant difference between A")
    assert decide_rates(compare_rates(0, 50, 0, 50)).outcome == VerdictOutcome.NO_DIFFERENCE


def test_borderline_when_only_one_of_the_two_says_so() -> None:
    # Search small counts for a case where Newcombe's interval and the pooled z-test disagree,
    # so the rule's third outcome is exercised on real numbers rather than an invented one.
    found = None
    for a in range(0, 31):
        for b in range(0, 31):
            comparison = compare_rates(a, 30, b, 30)
            excludes = comparison.ci_low > 0 or comparison.ci_high < 0
            if excludes != (comparison.p_value < 0.05):
                found = comparison
                break
        if found:
            break
    assert found is not None
    decision = decide_rates(found)
    assert decision.outcome == VerdictOutcome.BORDERLINE
    assert decision.sentence("A", "B", "rate").startswith("borderline between A and B on rate")


def test_comparing_rates_needs_trials_on_both_sides() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        compare_rates(0, 0, 1, 2)
