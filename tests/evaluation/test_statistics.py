import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.statistics import (
    Decision,
    DiscordantTest,
    PairedComparison,
    VerdictOutcome,
    WinsTiesLosses,
    binomial_two_sided_p,
    cohens_kappa,
    decide,
    mcnemar_exact,
    paired_bootstrap,
    percent_agreement,
    sign_test,
    verdict_sentence,
    wins_ties_losses,
)

# Property tests share two CPU cores with other work: few examples, few resamples.
few = settings(max_examples=30, deadline=None)
scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30)


def comparison(difference: float, low: float, high: float) -> PairedComparison:
    return PairedComparison(
        mean_a=0.5 + difference,
        mean_b=0.5,
        difference=difference,
        ci_low=low,
        ci_high=high,
        p_value=0.01,
        confidence=0.95,
        examples=100,
        resamples=10_000,
    )


# --- paired bootstrap -----------------------------------------------------------------------


def test_bootstrap_of_constant_difference_is_exact():
    # Every example differs by exactly 0.5, so every resample mean is 0.5: the interval has no
    # width, and no centred resample is as far from 0 as 0.5, so p = (1 + 0) / (1 + 1000).
    result = paired_bootstrap([1.0, 1.0, 0.5], [0.5, 0.5, 0.0], resamples=1000)
    assert result.mean_a == pytest.approx(2.5 / 3)
    assert result.mean_b == pytest.approx(1 / 3)
    assert result.difference == pytest.approx(0.5)
    assert result.ci_low == pytest.approx(0.5)
    assert result.ci_high == pytest.approx(0.5)
    assert result.p_value == pytest.approx(1 / 1001)
    assert result.significant


def test_bootstrap_of_identical_candidates_finds_nothing():
    values = [0.0, 1.0, 1.0, 0.0, 0.5]
    result = paired_bootstrap(values, values, resamples=500)
    assert (result.difference, result.ci_low, result.ci_high, result.p_value) == (0, 0, 0, 1.0)
    assert not result.significant


def test_bootstrap_matches_enumeration_for_two_examples():
    # Differences d = [1, 0]. A resample of 2 draws is (1,1), (1,0), (0,1) or (0,0), so its mean is
    # 1 with probability 1/4, 0.5 with 1/2 and 0 with 1/4. The 2.5th and 97.5th percentiles are
    # therefore 0 and 1, and |mean - 0.5| >= 0.5 happens for means 0 and 1: p ~ 1/2.
    result = paired_bootstrap([1.0, 0.0], [0.0, 0.0], resamples=20_000, seed=3)
    assert result.difference == 0.5
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_bootstrap_is_reproducible_by_seed():
    rng = np.random.default_rng(7)
    a, b = rng.random(200).tolist(), rng.random(200).tolist()
    assert paired_bootstrap(a, b, resamples=2000, seed=1) == paired_bootstrap(
        a, b, resamples=2000, seed=1
    )
    assert paired_bootstrap(a, b, resamples=2000, seed=1) != paired_bootstrap(
        a, b, resamples=2000, seed=2
    )


def test_clearly_better_candidate_gets_a_small_p_value_and_a_positive_interval():
    rng = np.random.default_rng(0)
    b = (rng.random(300) < 0.5).astype(float)
    a = np.maximum(b, (rng.random(300) < 0.3).astype(float))  # a never worse, often better
    result = paired_bootstrap(a.tolist(), b.tolist(), resamples=2000)
    assert result.p_value < 0.01
    assert 0 < result.ci_low < result.difference < result.ci_high


def test_candidates_from_the_same_distribution_are_not_significant():
    rng = np.random.default_rng(11)
    a, b = rng.random(300), rng.random(300)
    assert paired_bootstrap(a.tolist(), b.tolist(), resamples=2000).p_value > 0.05


def test_interval_narrows_with_more_data():
    rng = np.random.default_rng(5)
    a, b = rng.random(2000), rng.random(2000)
    small = paired_bootstrap(a[:50].tolist(), b[:50].tolist(), resamples=2000)
    large = paired_bootstrap(a.tolist(), b.tolist(), resamples=2000)
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 3


def test_confidence_level_changes_the_interval():
    rng = np.random.default_rng(2)
    a, b = rng.random(100).tolist(), rng.random(100).tolist()
    wide = paired_bootstrap(a, b, resamples=2000, confidence=0.99)
    narrow = paired_bootstrap(a, b, resamples=2000, confidence=0.8)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_numpy_arrays_are_accepted_as_scores():
    rng = np.random.default_rng(0)
    a, b = rng.random(1000), rng.random(1000)
    from_arrays = paired_bootstrap(a, b, resamples=2000)
    from_lists = paired_bootstrap(a.tolist(), b.tolist(), resamples=2000)
    assert from_arrays == from_lists


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 0.0], [1.0], {}, "same examples, got 2 scores for a and 1 for b"),
        ([], [], {}, "at least one example"),
        ([float("nan")], [0.0], {}, "finite"),
        ([1.0], [0.0], {"resamples": 0}, "resamples"),
        ([1.0], [0.0], {"confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_refuses_bad_input(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)


@few
@given(st.data())
def test_bootstrap_interval_contains_the_observed_difference(data):
    a = data.draw(scores)
    b = data.draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=len(a), max_size=len(a)))
    result = paired_bootstrap(a, b, resamples=300, seed=data.draw(st.integers(0, 2**32)))
    assert result.ci_low - 1e-9 <= result.difference <= result.ci_high + 1e-9
    assert -1 <= result.ci_low <= result.ci_high <= 1
    assert 0 < result.p_value <= 1
    assert result.difference == pytest.approx(result.mean_a - result.mean_b)


# --- wins, ties, losses and exact tests ------------------------------------------------------


def test_wins_ties_losses():
    a = [1.0, 0.5, 0.0, 0.8, 0.3]
    b = [0.0, 0.5, 1.0, 0.75, 0.3]
    assert wins_ties_losses(a, b) == WinsTiesLosses(wins=2, ties=2, losses=1)
    # With tolerance 0.1 the 0.8 vs 0.75 win (by 0.05) becomes a tie.
    assert wins_ties_losses(a, b, tolerance=0.1) == WinsTiesLosses(wins=1, ties=3, losses=1)
    with pytest.raises(ValueError):
        wins_ties_losses(a, b[:2])
    with pytest.raises(ValueError, match="negative"):
        wins_ties_losses(a, b, tolerance=-1)


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        (0, 0, 1.0),
        (3, 6, 1.0),  # the middle of the distribution: 2 * P(X <= 3) > 1, capped
        (0, 5, 2 / 32),  # 2 * C(5,0) / 2^5
        (5, 5, 2 / 32),
        (1, 6, 14 / 64),  # 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64
        (2, 10, 2 * (1 + 10 + 45) / 1024),  # = 0.109375
    ],
)
def test_binomial_two_sided_p_by_hand(successes, trials, expected):
    assert binomial_two_sided_p(successes, trials) == pytest.approx(expected)


def test_binomial_handles_large_samples_and_refuses_nonsense():
    assert binomial_two_sided_p(5000, 10_000) == 1.0
    assert binomial_two_sided_p(4000, 10_000) < 1e-80
    with pytest.raises(ValueError):
        binomial_two_sided_p(3, 2)


def test_mcnemar_exact_counts_only_discordant_pairs():
    # Both right on 3 examples, both wrong on 2: they do not count.
    # a alone right on 1, b alone right on 5 -> p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64.
    a = [True] * 3 + [False] * 2 + [True] + [False] * 5
    b = [True] * 3 + [False] * 2 + [False] + [True] * 5
    assert mcnemar_exact(a, b) == DiscordantTest(
        a_better=1, b_better=5, p_value=14 / 64, name="McNemar exact"
    )
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0
    with pytest.raises(ValueError, match="binary"):
        mcnemar_exact([0.5], [1])


def test_sign_test_drops_ties():
    # wins 5 (0.9 > 0.1 ...), ties 2, losses 0 -> p = 2 / 2^5 = 1/16
    a = [0.9] * 5 + [0.4] * 2
    b = [0.1] * 5 + [0.4] * 2
    assert sign_test(a, b) == DiscordantTest(a_better=5, b_better=0, p_value=1 / 16)


# --- verdicts -------------------------------------------------------------------------------


def agreeing(comparison: PairedComparison, p_value: float | None = None) -> DiscordantTest:
    """A McNemar result pointing the same way as the comparison; by default significant
    exactly when the interval excludes 0."""
    if p_value is None:
        p_value = 0.004 if comparison.significant else 0.45
    ahead, behind = (20, 4) if comparison.difference >= 0 else (4, 20)
    return DiscordantTest(ahead, behind, p_value, name="McNemar exact")


def decided(comparison: PairedComparison, p_value: float | None = None, **kw: bool) -> Decision:
    return decide(comparison, agreeing(comparison, p_value), **kw)


def test_verdict_when_a_wins():
    decision = decided(comparison(0.124, 0.081, 0.165))
    assert decision.outcome == VerdictOutcome.BETTER
    assert (
        verdict_sentence("fine-tuned", "5-shot prompting", "exact match", decision)
        == "fine-tuned beats 5-shot prompting by 12.4 points exact match "
        "(95 % CI 8.1 to 16.5; McNemar exact p = 0.004)"
    )


def test_verdict_when_a_loses_reports_positive_gaps():
    decision = decided(comparison(-0.124, -0.165, -0.081))
    assert decision.outcome == VerdictOutcome.WORSE
    assert (
        verdict_sentence("5-shot prompting", "fine-tuned", "exact match", decision)
        == "5-shot prompting is worse than fine-tuned by 12.4 points exact match "
        "(95 % CI 8.1 to 16.5; McNemar exact p = 0.004)"
    )


def test_verdict_when_interval_contains_zero():
    decision = decided(comparison(0.012, -0.02, 0.044))
    assert decision.outcome == VerdictOutcome.NO_DIFFERENCE
    assert verdict_sentence("A", "B", "exact match", decision) == (
        "no significant difference between A and B on exact match "
        "(difference 1.2 points, 95 % CI -2.0 to 4.4; McNemar exact p = 0.450)"
    )
    # Rounding never prints "-0.0".
    assert "difference 0.0 points" in verdict_sentence(
        "A", "B", "F1", decided(comparison(-0.0001, -0.1, 0.1))
    )


def test_verdict_in_raw_units_and_for_lower_is_better_metrics():
    faster = comparison(-0.25, -0.4, -0.1)  # a is 0.25 s quicker per request
    decision = decided(faster, higher_is_better=False)
    assert decision.outcome == VerdictOutcome.BETTER
    assert (
        verdict_sentence("tuned", "base", "p95 latency (s)", decision, points=False)
        == "tuned beats base by 0.25 p95 latency (s) (95 % CI 0.1 to 0.4; McNemar exact p = 0.004)"
    )


def test_verdict_from_a_real_bootstrap():
    a = [1.0] * 80 + [0.0] * 20
    b = [1.0] * 50 + [0.0] * 50
    decision = decide(paired_bootstrap(a, b, resamples=2000), mcnemar_exact(a, b))
    sentence = verdict_sentence("tuned", "base", "exact match", decision)
    assert sentence.startswith("tuned beats base by 30.0 points exact match (95 % CI ")
    assert sentence.endswith("; McNemar exact p < 0.001)")


# --- the one decision rule ------------------------------------------------------------------


def test_the_observed_sweep_row_is_borderline_not_beats():
    # Observed: step 30 "beats" step 10 (95 % CI 4.8 to 52.4) beside McNemar p = 0.070.
    decision = decided(comparison(0.286, 0.048, 0.524), p_value=0.070)
    assert decision.outcome == VerdictOutcome.BORDERLINE
    assert decision.outcome.label == "borderline"
    sentence = decision.sentence("step 30", "step 10", "exact match")
    assert "beats" not in sentence
    assert sentence == (
        "borderline between step 30 and step 10 on exact match: step 30 scores 28.6 points "
        "higher (95 % CI 4.8 to 52.4, which excludes 0), but McNemar exact p = 0.070 is not "
        "below 0.05"
    )
    assert decision.rule == "Rule: 95 % paired bootstrap CI excludes 0 and McNemar exact p < 0.05"


def test_a_significant_test_with_an_interval_reaching_zero_is_borderline():
    decision = decided(comparison(0.03, -0.001, 0.06), p_value=0.03)
    assert decision.outcome == VerdictOutcome.BORDERLINE
    assert "which includes 0), but McNemar exact p = 0.030 is below 0.05" in decision.sentence(
        "A", "B", "exact match"
    )


def test_a_test_pointing_the_other_way_is_borderline():
    interval_says_a = comparison(0.05, 0.01, 0.09)
    decision = decide(interval_says_a, DiscordantTest(2, 15, 0.002, name="sign test"))
    assert decision.outcome == VerdictOutcome.BORDERLINE
    assert "sign test counts more items where B did better" in decision.sentence("A", "B", "F1")


def test_p_exactly_at_the_level_is_not_significant():
    decision = decided(comparison(0.1, 0.02, 0.18), p_value=0.05)
    assert decision.outcome == VerdictOutcome.BORDERLINE


def test_no_worse_than_a_margin_reads_the_worse_end_of_the_interval():
    close = decided(comparison(-0.01, -0.03, 0.01))
    assert close.outcome == VerdictOutcome.NO_DIFFERENCE
    assert close.no_worse_than(0.03) and not close.no_worse_than(0.02)
    assert decided(comparison(0.1, 0.05, 0.15)).no_worse_than(0.0)
    assert not decided(comparison(-0.1, -0.15, -0.05)).no_worse_than(0.5)
    with pytest.raises(ValueError, match="margin"):
        close.no_worse_than(-0.01)


def test_a_decision_read_the_other_way_round_swaps_better_and_worse():
    better = decided(comparison(0.1, 0.02, 0.18))
    assert better.swapped().outcome == VerdictOutcome.WORSE
    assert better.swapped().swapped() == better
    borderline = decided(comparison(0.1, 0.02, 0.18), p_value=0.2)
    assert borderline.swapped().outcome == VerdictOutcome.BORDERLINE
    behind = decided(comparison(-0.01, -0.03, 0.01)).swapped()
    assert behind.comparison.ci_low == -0.01 and behind.no_worse_than(0.01)


@few
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.lists(st.booleans(), min_size=1))
def test_the_rule_calls_a_difference_only_when_both_agree(a: list[bool], b: list[bool]) -> None:
    b = (b * 40)[: len(a)]
    comparison_ = paired_bootstrap([float(x) for x in a], [float(x) for x in b], resamples=300)
    test = mcnemar_exact(a, b)
    decision = decide(comparison_, test)
    both = comparison_.significant and test.p_value < 0.05
    assert decision.is_difference == both
    if not comparison_.significant and test.p_value >= 0.05:
        assert decision.outcome == VerdictOutcome.NO_DIFFERENCE


# --- agreement ------------------------------------------------------------------------------


def test_kappa_worked_example():
    judge = ["yes", "yes", "no", "no"]
    human = ["yes", "no", "no", "no"]
    # p_o = 3/4. Judge says yes 1/2, no 1/2; human yes 1/4, no 3/4.
    # p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert percent_agreement(judge, human) == 0.75
    assert cohens_kappa(judge, human) == pytest.approx(0.5)


def test_kappa_extremes():
    assert cohens_kappa(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert cohens_kappa(["a", "a"], ["a", "a"]) == 1.0  # undefined (p_e = 1): perfect agreement
    # Systematic disagreement: p_o = 0, p_e = 1/2 -> kappa = -1
    assert cohens_kappa(["a", "b"], ["b", "a"]) == -1.0
    assert cohens_kappa([1, 2, 3], [1, 2, 3]) == 1.0  # any hashable labels, e.g. 1-5 ratings


def test_kappa_is_near_zero_for_independent_raters():
    rng = np.random.default_rng(0)
    judge = rng.choice(["good", "bad", "unsure"], size=5000).tolist()
    human = rng.choice(["good", "bad", "unsure"], size=5000, p=[0.5, 0.3, 0.2]).tolist()
    assert abs(cohens_kappa(judge, human)) < 0.05
    assert percent_agreement(judge, human) == pytest.approx(1 / 3, abs=0.03)


def test_agreement_refuses_unpaired_ratings():
    with pytest.raises(ValueError, match="same items"):
        cohens_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        percent_agreement([], [])


@few
@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=30))
def test_kappa_is_one_against_itself(labels):
    assert cohens_kappa(labels, labels) == 1.0
    assert percent_agreement(labels, labels) == 1.0
