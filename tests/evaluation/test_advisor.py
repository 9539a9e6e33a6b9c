from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from evaluation.advisor import (
    DatasetVersionChange,
    Option,
    Pricing,
    RequestShape,
    advise,
    break_even,
    cost_per_request,
    insufficient_data,
    monthly_cost,
    overfitting,
    payback_in_words,
    prompting_is_enough,
    requirements_change_often,
)
from evaluation.statistics import (
    MCNEMAR,
    Decision,
    DiscordantTest,
    PairedComparison,
    VerdictOutcome,
    decide,
)

NOW = datetime(2025, 3, 31, 12, tzinfo=UTC)

# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens as a base model, $0.30 / $1.20
# once fine-tuned. The few-shot prompt carries five examples: 1,200 prompt tokens; the
# fine-tuned model needs no examples: 150 prompt tokens. Both answer in 100 tokens.
BASE_PRICE = Pricing(Decimal("0.15"), Decimal("0.60"))
FINE_TUNED_PRICE = Pricing(Decimal("0.30"), Decimal("1.20"))


def fine_tuned(training_cost: str = "27", pricing: Pricing = FINE_TUNED_PRICE) -> Option:
    return Option(
        name="ft-mini",
        kind="fine_tuned",
        quality=0.86,
        pricing=pricing,
        request_shape=RequestShape(150, 100),
        one_off_usd=Decimal(training_cost),
    )


def gap(difference: float, low: float, high: float, test_p: float | None = None) -> Decision:
    """Fine-tuned minus the option, as paired_bootstrap(fine_tuned, option) reports it, decided
    by the rule with McNemar's test; unless ``test_p`` is given, the test agrees with the
    interval (p = 0.01 when it excludes 0, 0.5 otherwise)."""
    comparison = PairedComparison(
        mean_a=0.86,
        mean_b=0.86 - difference,
        difference=difference,
        ci_low=low,
        ci_high=high,
        p_value=0.01,
        confidence=0.95,
        examples=200,
        resamples=10_000,
    )
    if test_p is None:
        test_p = 0.01 if comparison.significant else 0.5
    ahead, behind = (12, 3) if difference >= 0 else (3, 12)
    return decide(comparison, DiscordantTest(ahead, behind, test_p, name=MCNEMAR))


def few_shot(vs_fine_tuned: Decision | None = None, name: str = "5-shot") -> Option:
    return Option(
        name=name,
        kind="few_shot",
        quality=0.80,
        pricing=BASE_PRICE,
        request_shape=RequestShape(1200, 100),
        vs_fine_tuned=vs_fine_tuned,
    )


def zero_shot_base() -> Option:
    return Option(
        name="zero-shot",
        kind="zero_shot",
        quality=0.70,
        pricing=BASE_PRICE,
        request_shape=RequestShape(150, 100),
    )


def version(days_ago: float, share: float, examples: int = 300) -> DatasetVersionChange:
    return DatasetVersionChange(NOW - timedelta(days=days_ago), examples, share)


# --- cost per request and per month ----------------------------------------------------------


def test_cost_per_request_prices_prompt_and_completion_tokens():
    # 1,200 x 0.15 / 1M + 100 x 0.60 / 1M = 0.00018 + 0.00006
    assert cost_per_request(few_shot()) == Decimal("0.00024")
    # 150 x 0.30 / 1M + 100 x 1.20 / 1M = 0.000045 + 0.00012: fewer tokens at twice the price
    assert cost_per_request(fine_tuned()) == Decimal("0.000165")


def test_cost_per_request_adds_the_fixed_fee_and_takes_fractional_means():
    option = Option(
        "api",
        "zero_shot",
        0.5,
        Pricing(Decimal("1"), Decimal("2"), usd_per_request=Decimal("0.001")),
        RequestShape(100.5, 10.25),
    )
    # 100.5 x 1 / 1M + 10.25 x 2 / 1M + 0.001
    assert cost_per_request(option) == Decimal("0.0011210")


def test_monthly_cost_is_requests_times_cost_plus_hosting():
    assert monthly_cost(few_shot(), 100_000) == Decimal("24")
    assert monthly_cost(fine_tuned(), 100_000) == Decimal("16.5")
    hosted = fine_tuned(pricing=Pricing(Decimal(0), Decimal(0), usd_per_hosting_hour=Decimal(2)))
    # 730 hours a month x $2, whatever the volume; the training cost is not monthly.
    assert monthly_cost(hosted, 0) == Decimal("1460")
    assert monthly_cost(hosted, 1_000_000) == Decimal("1460")
    with pytest.raises(ValueError, match="monthly_requests"):
        monthly_cost(hosted, -1)


def test_inputs_are_checked():
    with pytest.raises(TypeError, match="Decimal"):
        Pricing(0.15, Decimal("0.60"))
    with pytest.raises(ValueError, match="at least 0"):
        Pricing(Decimal("-1"), Decimal(0))
    with pytest.raises(ValueError, match="mean_prompt_tokens"):
        RequestShape(-1, 10)
    with pytest.raises(ValueError, match="kind"):
        Option("x", "guess", 0.5, BASE_PRICE, RequestShape(1, 1))
    with pytest.raises(ValueError, match="one-off"):
        Option("x", "few_shot", 0.5, BASE_PRICE, RequestShape(1, 1), one_off_usd=Decimal(5))
    with pytest.raises(ValueError, match="itself"):
        Option("x", "fine_tuned", 0.5, BASE_PRICE, RequestShape(1, 1), gap(0, 0, 0))
    with pytest.raises(ValueError, match="changed_share"):
        DatasetVersionChange(NOW, 10, 1.5)


# --- break-even ------------------------------------------------------------------------------


def test_fine_tuned_pays_back_above_a_volume():
    result = break_even(fine_tuned(), few_shot(), monthly_requests=100_000, horizon_months=12)
    assert result.status == "pays_back"
    # savings per request 0.00024 - 0.000165; payback 27 / (0.000075 x 100,000) = 27 / 7.5
    assert result.savings_per_request == Decimal("0.000075")
    assert result.monthly_savings == Decimal("7.5")
    assert result.payback_months == Decimal("3.6")
    # break-even for 12 months: 27 / (0.000075 x 12) = 27 / 0.0009
    assert result.min_monthly_requests == Decimal("30000")
    assert result.max_monthly_requests is None
    assert result.pays_back_within_horizon and result.pays_back_at_volume


def test_payback_at_the_break_even_volume_is_the_horizon_exactly():
    at = break_even(fine_tuned(), few_shot(), monthly_requests=30_000, horizon_months=12)
    below = break_even(fine_tuned(), few_shot(), monthly_requests=29_999, horizon_months=12)
    assert at.payback_months == Decimal(12)
    assert at.pays_back_at_volume
    assert below.payback_months is not None and below.payback_months > 12
    assert not below.pays_back_at_volume


def test_fine_tuned_never_pays_back_when_it_costs_more_per_request():
    # The base model without examples: 0.0000825 a request, half the fine-tuned price.
    result = break_even(fine_tuned(), zero_shot_base(), monthly_requests=10**9, horizon_months=60)
    assert result.status == "never_pays_back"
    assert result.savings_per_request == Decimal("-0.0000825")
    assert result.payback_months is None
    assert result.min_monthly_requests is None and result.max_monthly_requests is None
    assert not result.pays_back_within_horizon and not result.pays_back_at_volume


def test_fine_tuned_at_the_same_cost_never_pays_back_its_training():
    same = Option("same", "few_shot", 0.8, FINE_TUNED_PRICE, RequestShape(150, 100))
    result = break_even(fine_tuned(), same, monthly_requests=100_000, horizon_months=12)
    assert result.status == "never_pays_back"
    assert result.payback_months is None


def test_fine_tuned_without_training_cost_is_cheaper_from_the_first_request():
    result = break_even(fine_tuned("0"), few_shot(), monthly_requests=0, horizon_months=1)
    assert result.status == "cheaper_from_first_request"
    assert result.payback_months == Decimal(0)
    assert result.min_monthly_requests == Decimal(0)
    assert result.max_monthly_requests is None


def test_free_training_at_equal_cost_costs_no_more_from_the_first_request():
    same = Option("same", "few_shot", 0.8, FINE_TUNED_PRICE, RequestShape(150, 100))
    result = break_even(fine_tuned("0"), same, monthly_requests=100, horizon_months=1)
    assert result.status == "cheaper_from_first_request"
    assert result.payback_months == Decimal(0)


def test_free_training_that_costs_more_per_request_never_pays_back():
    result = break_even(fine_tuned("0"), zero_shot_base(), monthly_requests=100, horizon_months=1)
    assert result.status == "never_pays_back"
    assert result.payback_months is None


def test_self_hosted_fine_tuned_model_must_cover_its_hosting_first():
    # Self-hosted at $2 an hour: $1,460 a month, nothing per request. Against a larger hosted
    # model at $2.50 / $10 per million: 1,200 x 2.5 / 1M + 100 x 10 / 1M = $0.004 a request.
    hosted = fine_tuned("60", Pricing(Decimal(0), Decimal(0), usd_per_hosting_hour=Decimal(2)))
    larger = Option(
        "gpt-4o",
        "larger_model",
        0.85,
        Pricing(Decimal("2.5"), Decimal(10)),
        few_shot().request_shape,
    )
    result = break_even(hosted, larger, monthly_requests=380_000, horizon_months=12)
    assert result.status == "pays_back"
    assert result.fixed_monthly_savings == Decimal("-1460")
    # 0.004 x 380,000 - 1,460 = 60 a month, repaying $60 in one month
    assert result.monthly_savings == Decimal(60)
    assert result.payback_months == Decimal(1)
    # (60 / 12 + 1,460) / 0.004
    assert result.min_monthly_requests == Decimal("366250")
    quiet = break_even(hosted, larger, monthly_requests=300_000, horizon_months=12)
    assert quiet.payback_months is None  # 1,200 - 1,460 < 0: hosting alone costs more


def test_fine_tuned_api_against_a_self_hosted_model_pays_back_below_a_volume():
    # The alternative runs on a $4 an hour machine ($2,920 a month); the fine-tuned API costs
    # $0.001 a request, so it saves money only while volume stays low.
    api = fine_tuned("24", Pricing(Decimal(0), Decimal(0), usd_per_request=Decimal("0.001")))
    local = Option(
        "local-70b",
        "larger_model",
        0.85,
        Pricing(Decimal(0), Decimal(0), usd_per_hosting_hour=Decimal(4)),
        RequestShape(1200, 100),
    )
    result = break_even(api, local, monthly_requests=920_000, horizon_months=12)
    assert result.status == "pays_back"
    # 2,920 - 920 = 2,000 a month; 24 / 2,000
    assert result.payback_months == Decimal("0.012")
    assert result.min_monthly_requests == Decimal(0)
    # (2,920 - 24 / 12) / 0.001
    assert result.max_monthly_requests == Decimal("2918000")
    busy = break_even(api, local, monthly_requests=3_000_000, horizon_months=12)
    assert busy.payback_months is None


def test_fixed_savings_too_small_for_the_horizon_leave_no_volume():
    # $0.001 an hour is $0.73 a month: $24 takes about 33 months even at zero volume.
    api = fine_tuned("24", Pricing(Decimal(0), Decimal(0), usd_per_request=Decimal("0.001")))
    local = Option(
        "local",
        "larger_model",
        0.85,
        Pricing(Decimal(0), Decimal(0), usd_per_hosting_hour=Decimal("0.001")),
        RequestShape(1, 1),
    )
    result = break_even(api, local, monthly_requests=0, horizon_months=12)
    assert result.status == "pays_back"
    assert result.min_monthly_requests is None
    assert result.payback_months is not None and result.payback_months > 12


def test_equal_per_request_cost_pays_back_from_hosting_at_every_volume_or_none():
    # Same per-request price, the alternative also pays $1 an hour: $730 a month saved.
    alternative = Option(
        "hosted-base",
        "few_shot",
        0.8,
        Pricing(Decimal("0.30"), Decimal("1.20"), usd_per_hosting_hour=Decimal(1)),
        RequestShape(150, 100),
    )
    one_month = break_even(fine_tuned("1460"), alternative, monthly_requests=5, horizon_months=1)
    two_months = break_even(fine_tuned("1460"), alternative, monthly_requests=5, horizon_months=2)
    assert one_month.payback_months == two_months.payback_months == Decimal(2)
    assert one_month.min_monthly_requests is None
    assert two_months.min_monthly_requests == Decimal(0)
    assert two_months.max_monthly_requests is None


def test_break_even_checks_roles_and_horizon():
    with pytest.raises(ValueError, match="not the fine-tuned"):
        break_even(few_shot(), few_shot(), monthly_requests=1, horizon_months=1)
    with pytest.raises(ValueError, match="not an alternative"):
        break_even(fine_tuned(), fine_tuned(), monthly_requests=1, horizon_months=1)
    with pytest.raises(ValueError, match="horizon_months"):
        break_even(fine_tuned(), few_shot(), monthly_requests=1, horizon_months=0)


# --- pitfall: prompting is enough ------------------------------------------------------------


def test_prompting_is_enough_when_the_interval_includes_zero():
    pitfall = prompting_is_enough(fine_tuned(), few_shot(gap(0.02, -0.01, 0.05)))
    assert pitfall is not None
    assert pitfall.code == "prompting_is_enough"
    assert "5-shot" in pitfall.title
    assert "difference 2.0 points, 95 % CI -1.0 to 5.0" in pitfall.explanation


def test_prompting_is_enough_when_the_interval_touches_zero():
    assert prompting_is_enough(fine_tuned(), few_shot(gap(0.02, 0.0, 0.04))) is not None


def test_prompting_is_enough_when_the_prompt_is_better():
    pitfall = prompting_is_enough(fine_tuned(), few_shot(gap(-0.05, -0.08, -0.02)))
    assert pitfall is not None
    assert "ft-mini is worse than 5-shot by 5.0 points" in pitfall.explanation


def test_prompting_is_not_enough_when_fine_tuned_is_reliably_better():
    assert prompting_is_enough(fine_tuned(), few_shot(gap(0.03, 0.001, 0.06))) is None


def test_prompting_is_enough_needs_a_paired_comparison():
    assert prompting_is_enough(fine_tuned(), few_shot(None)) is None


# --- pitfall: insufficient data --------------------------------------------------------------


def test_insufficient_data_below_one_hundred_examples():
    pitfall = insufficient_data(99)
    assert pitfall is not None
    assert pitfall.code == "insufficient_data"
    assert "Only 99 training examples" in pitfall.explanation
    assert "100 to 500" in pitfall.explanation
    assert insufficient_data(0) is not None


def test_one_hundred_examples_are_enough_to_start():
    assert insufficient_data(100) is None
    with pytest.raises(ValueError, match="training_examples"):
        insufficient_data(-1)


# --- pitfall: overfitting --------------------------------------------------------------------


def test_overfitting_at_a_validation_loss_one_and_a_half_times_training():
    pitfall = overfitting(train_loss=0.5, val_loss=0.75)
    assert pitfall is not None
    assert pitfall.code == "overfitting"
    assert "validation loss 0.75 is 1.50x the training loss 0.5" in pitfall.explanation


def test_no_overfitting_just_below_the_ratio_or_without_numbers():
    assert overfitting(train_loss=0.5, val_loss=0.74) is None
    assert overfitting(train_loss=0.9, val_loss=0.8) is None
    assert overfitting(train_loss=0.5) is None
    assert overfitting() is None


def test_zero_training_loss_with_any_validation_loss_is_overfitting():
    pitfall = overfitting(train_loss=0.0, val_loss=0.1)
    assert pitfall is not None
    assert "infinitely" in pitfall.explanation
    assert overfitting(train_loss=0.0, val_loss=0.0) is None


def test_overfitting_when_validation_loss_rose_ten_percent_after_its_best_step():
    pitfall = overfitting(
        train_loss=0.5, val_loss=0.55, best_val_loss=0.5, best_val_step=100, last_step=300
    )
    assert pitfall is not None
    assert "best at step 100 (0.5) and rose to 0.55 by step 300" in pitfall.explanation
    just_below = overfitting(
        train_loss=0.5, val_loss=0.54, best_val_loss=0.5, best_val_step=100, last_step=300
    )
    assert just_below is None
    best_is_last = overfitting(
        train_loss=0.5, val_loss=0.55, best_val_loss=0.5, best_val_step=300, last_step=300
    )
    assert best_is_last is None


def test_overfitting_from_a_ten_point_accuracy_gap():
    pitfall = overfitting(train_accuracy=0.9, val_accuracy=0.8)
    assert pitfall is not None
    assert "training accuracy 90 % against validation accuracy 80 %" in pitfall.explanation
    assert overfitting(train_accuracy=0.9, val_accuracy=0.81) is None


# --- pitfall: requirements change often ------------------------------------------------------


def test_requirements_change_often_with_three_large_changes_in_thirty_days():
    history = [version(90, 1.0), version(30, 0.20), version(12, 0.35), version(2, 0.5)]
    pitfall = requirements_change_often(history, now=NOW, retraining_cost=Decimal(27))
    assert pitfall is not None
    assert pitfall.code == "requirements_change_often"
    assert "3 versions of the dataset in the last 30 days" in pitfall.explanation
    assert "(20 %, 35 %, 50 %)" in pitfall.explanation
    assert "At $27.00 a training run, that is $81.00 of retraining" in pitfall.explanation


def test_history_order_does_not_matter():
    history = [version(2, 0.5), version(90, 1.0), version(12, 0.35), version(30, 0.20)]
    assert requirements_change_often(history, now=NOW) is not None


def test_requirements_do_not_change_often_just_outside_the_thresholds():
    older = [version(90, 1.0), version(30.001, 0.5), version(12, 0.35), version(2, 0.5)]
    smaller = [version(90, 1.0), version(20, 0.19), version(12, 0.35), version(2, 0.5)]
    fewer = [version(90, 1.0), version(12, 0.35), version(2, 0.5)]
    assert requirements_change_often(older, now=NOW) is None
    assert requirements_change_often(smaller, now=NOW) is None
    assert requirements_change_often(fewer, now=NOW) is None
    assert requirements_change_often([], now=NOW) is None


def test_the_first_version_is_the_dataset_not_a_change():
    created_recently = [version(25, 1.0), version(12, 0.35), version(2, 0.5)]
    assert requirements_change_often(created_recently, now=NOW) is None


# --- advise ----------------------------------------------------------------------------------

CALM_HISTORY = [version(200, 1.0), version(100, 0.1)]
CHANGING_HISTORY = [version(90, 1.0), version(25, 0.3), version(12, 0.35), version(2, 0.5)]


def advice_for(options, **overrides):
    arguments = {
        "monthly_requests": 100_000,
        "horizon_months": 12,
        "training_examples": 300,
        "train_loss": 0.5,
        "val_loss": 0.6,
        "version_history": CALM_HISTORY,
        "now": NOW,
    }
    arguments.update(overrides)
    return advise(options, **arguments)


def test_advice_puts_the_options_side_by_side():
    advice = advice_for([fine_tuned(), few_shot(gap(0.06, 0.02, 0.10))])
    ft_row, prompt_row = advice.rows
    assert (ft_row.name, ft_row.quality, ft_row.vs_fine_tuned) == ("ft-mini", 0.86, None)
    assert ft_row.cost_per_request == Decimal("0.000165")
    assert ft_row.monthly_cost == Decimal("16.5")
    assert ft_row.one_off_cost == Decimal(27)
    assert ft_row.horizon_cost == Decimal("225")  # 27 + 12 x 16.5
    assert ft_row.break_even is None and ft_row.payback_months is None
    assert prompt_row.vs_fine_tuned == gap(0.06, 0.02, 0.10)
    assert prompt_row.monthly_cost == Decimal("24")
    assert prompt_row.horizon_cost == Decimal("288")
    assert prompt_row.break_even is not None
    assert prompt_row.break_even.min_monthly_requests == Decimal("30000")
    assert prompt_row.payback_months == Decimal("3.6")
    assert (advice.monthly_requests, advice.horizon_months) == (100_000, 12)


def test_fine_tune_when_it_is_reliably_better_and_the_training_is_sound():
    advice = advice_for([fine_tuned(), few_shot(gap(0.06, 0.02, 0.10))])
    assert advice.pitfalls == ()
    assert advice.recommendation.startswith("Fine-tune: ft-mini beats 5-shot by 6.0 points")
    assert "costs $7.50 a month less to run than 5-shot" in advice.recommendation


def test_fine_tune_reports_the_closest_option_and_the_extra_running_cost():
    options = [
        fine_tuned(),
        few_shot(gap(0.06, 0.02, 0.10)),
        Option(
            "zero-shot",
            "zero_shot",
            0.83,
            BASE_PRICE,
            RequestShape(150, 100),
            vs_fine_tuned=gap(0.03, 0.01, 0.05),
        ),
    ]
    advice = advice_for(options)
    assert advice.recommendation.startswith("Fine-tune: ft-mini beats zero-shot by 3.0 points")
    # 16.5 - 0.0000825 x 100,000
    assert "costs $8.25 a month more to run than zero-shot" in advice.recommendation


def test_prompt_when_as_good_and_cheaper_at_low_volume():
    advice = advice_for([fine_tuned(), few_shot(gap(0.02, -0.01, 0.05))], monthly_requests=10_000)
    assert advice.pitfall_codes == ("prompting_is_enough",)
    # ft: 27 + 12 x 1.65 = 46.80; few-shot: 12 x 2.40 = 28.80
    assert advice.recommendation.startswith("Prompt: no significant difference")
    assert "ft-mini costs $46.80 with training, 5-shot $28.80" in advice.recommendation


def test_fine_tune_to_save_money_when_as_good_and_materially_cheaper_at_high_volume():
    advice = advice_for(
        [fine_tuned(), few_shot(gap(0.02, -0.01, 0.05))], monthly_requests=1_000_000
    )
    assert advice.recommendation.startswith(
        "Fine-tune to save money, not for quality: no significant difference"
    )
    # ft: 27 + 12 x 165 = 2,007; few-shot: 12 x 240 = 2,880; 27 / 75 a month = 11 days.
    assert "ft-mini costs $2,007.00 with training, 5-shot $2,880.00" in advice.recommendation
    assert "it pays for itself after about 11 days" in advice.recommendation
    # The pitfall says the same thing as the headline: only the saving speaks for fine-tuning.
    (pitfall,) = advice.pitfalls
    assert "worth it only for what it saves" in pitfall.explanation


def test_a_saving_too_small_to_matter_does_not_make_the_headline_say_fine_tune():
    # Observed: fine-tuned not significantly better than few-shot (the pitfalls said
    # "prompting may be enough") yet the headline said "Fine-tune" for $3 over a year.
    cheap_tuned = fine_tuned(training_cost="0.002", pricing=Pricing(Decimal(0), Decimal(0)))
    few = Option(
        "5-shot",
        "few_shot",
        0.80,
        Pricing(Decimal(0), Decimal(0), usd_per_request=Decimal("0.0000025")),
        RequestShape(1200, 100),
        vs_fine_tuned=gap(0.02, -0.01, 0.05),
    )
    advice = advice_for([cheap_tuned, few])
    _, few_row = advice.rows
    assert few_row.horizon_cost - advice.rows[0].horizon_cost == Decimal("2.998")
    assert advice.pitfall_codes == ("prompting_is_enough",)
    assert not advice.recommendation.lower().startswith("fine-tune")
    assert advice.recommendation.startswith("Prompt: no significant difference")
    assert "would save only $3.00" in advice.recommendation
    assert few_row.payback == "pays for itself immediately"


def test_a_borderline_gain_is_not_a_reason_to_fine_tune():
    # The interval excludes 0 but McNemar's test does not agree: borderline, not "beats".
    borderline = gap(0.06, 0.02, 0.10, test_p=0.07)
    assert borderline.outcome == VerdictOutcome.BORDERLINE
    advice = advice_for([fine_tuned(), few_shot(borderline)], monthly_requests=10_000)
    assert advice.pitfall_codes == ("prompting_is_enough",)
    assert advice.recommendation.startswith("Prompt: borderline between ft-mini and 5-shot")
    assert "beats" not in advice.recommendation
    assert "McNemar exact p = 0.070 is not below 0.05" in advice.recommendation


def test_an_option_better_than_the_fine_tuned_model_is_recommended_whatever_it_saves():
    advice = advice_for(
        [fine_tuned(), few_shot(gap(-0.05, -0.08, -0.02))], monthly_requests=1_000_000
    )
    assert advice.recommendation.startswith("Prompt: ft-mini is worse than 5-shot by 5.0 points")


def test_payback_is_said_in_words():
    assert payback_words(months=None) == "never pays for itself at this volume"
    assert payback_words(months="0") == "pays for itself immediately"
    assert payback_words(months="0.02") == "pays for itself immediately"  # under a day
    assert payback_words(months="0.36") == "pays for itself after about 11 days"
    assert payback_words(months="3.6") == "pays for itself after about 4 months"
    assert payback_words(months="1.1") == "pays for itself after about 1 month"
    assert payback_words(months="30") == "pays for itself after about 2 years"
    free = break_even(
        fine_tuned(training_cost="0"), few_shot(), monthly_requests=100_000, horizon_months=12
    )
    assert payback_in_words(free) == "cheaper from the first request: nothing to pay back"


def payback_words(*, months: str | None) -> str:
    fine = fine_tuned()
    result = break_even(fine, few_shot(), monthly_requests=100_000, horizon_months=12)
    payback = None if months is None else Decimal(months)
    return payback_in_words(replace(result, payback_months=payback))


def test_prompt_when_as_good_and_the_dataset_keeps_changing():
    advice = advice_for(
        [fine_tuned(), few_shot(gap(0.02, -0.01, 0.05))], version_history=CHANGING_HISTORY
    )
    assert advice.pitfall_codes == ("prompting_is_enough", "requirements_change_often")
    assert advice.recommendation.startswith("Prompt: no significant difference")
    assert "the dataset keeps changing" in advice.recommendation


def test_a_better_fine_tuned_model_with_changing_data_budgets_for_retraining():
    advice = advice_for(
        [fine_tuned(), few_shot(gap(0.06, 0.02, 0.10))], version_history=CHANGING_HISTORY
    )
    assert advice.recommendation.startswith("Fine-tune:")
    assert advice.recommendation.endswith("the dataset keeps changing, so budget for retraining.")


def test_the_cheapest_equal_option_is_the_one_set_against_fine_tuning():
    pricier = Option(
        "gpt-4o",
        "larger_model",
        0.87,
        Pricing(Decimal("2.5"), Decimal(10)),
        RequestShape(150, 100),
        vs_fine_tuned=gap(-0.01, -0.03, 0.01),
    )
    advice = advice_for([fine_tuned(), pricier, few_shot(gap(0.01, -0.02, 0.04))])
    assert advice.pitfall_codes == ("prompting_is_enough", "prompting_is_enough")
    assert "5-shot $288.00" in advice.recommendation


def test_not_enough_evidence_without_any_paired_comparison():
    advice = advice_for([fine_tuned(), few_shot(None)])
    assert advice.recommendation.startswith("Not enough evidence yet: no prompting option")
    assert advice_for([fine_tuned()]).recommendation.startswith("Not enough evidence yet")


def test_not_enough_evidence_while_an_option_is_unevaluated():
    unevaluated = Option("gpt-4o", "larger_model", 0.9, BASE_PRICE, RequestShape(150, 100))
    advice = advice_for([fine_tuned(), few_shot(gap(0.06, 0.02, 0.10)), unevaluated])
    assert advice.recommendation == (
        "Not enough evidence yet: ft-mini beats every evaluated option, but gpt-4o was not "
        "scored on the same examples."
    )


def test_not_enough_evidence_when_a_win_rests_on_too_little_data():
    advice = advice_for([fine_tuned(), few_shot(gap(0.06, 0.02, 0.10))], training_examples=60)
    assert advice.pitfall_codes == ("insufficient_data",)
    assert advice.recommendation.startswith("Not enough evidence yet: ft-mini beats 5-shot")
    assert "the training shows insufficient data" in advice.recommendation


def test_not_enough_evidence_when_a_cost_win_comes_from_an_overfitted_model():
    advice = advice_for(
        [fine_tuned(), few_shot(gap(0.02, -0.01, 0.05))],
        val_loss=0.9,
        monthly_requests=1_000_000,
    )
    assert advice.pitfall_codes == ("prompting_is_enough", "overfitting")
    assert advice.recommendation.startswith("Not enough evidence yet: no significant difference")
    assert "the training shows overfitting" in advice.recommendation


def test_advice_skips_overfitting_without_losses():
    advice = advice_for([fine_tuned(), few_shot(gap(0.06, 0.02, 0.10))], train_loss=None)
    assert "overfitting" not in advice.pitfall_codes


def test_advice_needs_exactly_one_fine_tuned_option_and_distinct_names():
    with pytest.raises(ValueError, match="exactly one fine-tuned"):
        advice_for([few_shot()])
    with pytest.raises(ValueError, match="exactly one fine-tuned"):
        advice_for([fine_tuned(), fine_tuned()])
    with pytest.raises(ValueError, match="distinct"):
        advice_for([fine_tuned(), few_shot(), few_shot()])


def test_an_equal_running_cost_is_said_as_such_not_as_zero_dollars_less():
    same = Option(
        "5-shot",
        "few_shot",
        0.80,
        FINE_TUNED_PRICE,
        RequestShape(150, 100),
        vs_fine_tuned=gap(0.06, 0.02, 0.10),
    )
    advice = advice_for([fine_tuned(), same])
    assert advice.recommendation.endswith("; it costs the same to run as 5-shot.")
