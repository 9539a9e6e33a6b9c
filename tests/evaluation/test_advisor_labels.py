"""The advisor per label and against a quality target: the guide's insufficient data pitfall
applies to each label of a label-set contract (the labels under the threshold listed with their
counts), and when even the best option is below the target a lead set, the recommendation says
that neither option is good enough, with the numbers, instead of recommending one of them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion
from datasets.quality.stats import MIN_TRAINING_EXAMPLES_PER_LABEL
from datasets.services import dataset_quality_target_set, dataset_version_freeze
from evaluation.advice import quality_interval, run_advice
from evaluation.advisor import (
    Option,
    Pricing,
    RequestShape,
    advise,
    insufficient_data,
    target_check,
)
from evaluation.models import CandidateKind, EvalRun, Prompting
from evaluation.services import CandidateSpec
from evaluation.statistics import (
    MCNEMAR,
    Decision,
    DiscordantTest,
    PairedComparison,
    decide,
    wilson_interval,
)
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import register_model_version
from tests.datasets.label_data import label_names, label_set_dataset
from tests.evaluation.finished_runs import finished_run

PRICE = Pricing(Decimal("0.15"), Decimal("0.60"))


def sixty_labels_of_eight_or_nine(seed: int = 1) -> dict[str, int]:
    """510 training examples over 60 labels: 8.5 a label, every label under the threshold,
    the total above the guide's 100."""
    labels = label_names(60, random.Random(seed))
    return {label: 8 + (i % 2) for i, label in enumerate(labels)}


def comparison(tuned: float, other: float, low: float, high: float) -> Decision:
    compared = PairedComparison(
        mean_a=tuned,
        mean_b=other,
        difference=tuned - other,
        ci_low=low,
        ci_high=high,
        p_value=0.001 if low > 0 or high < 0 else 0.5,
        confidence=0.95,
        examples=308,
        resamples=10_000,
    )
    significant = low > 0 or high < 0
    ahead, behind = (80, 4) if tuned >= other else (4, 80)
    return decide(compared, DiscordantTest(ahead, behind, 0.001 if significant else 0.5, MCNEMAR))


def options(
    tuned: float = 0.396,
    shot: float = 0.02,
    interval: tuple[float, float] | None = (0.343, 0.452),
    shot_interval: tuple[float, float] | None = None,
) -> list[Option]:
    return [
        Option(
            name="fine-tuned v1",
            kind="fine_tuned",
            quality=tuned,
            pricing=PRICE,
            request_shape=RequestShape(150, 5),
            one_off_usd=Decimal("2"),
            quality_interval=interval,
        ),
        Option(
            name="5-shot",
            kind="few_shot",
            quality=shot,
            pricing=PRICE,
            request_shape=RequestShape(1200, 5),
            vs_fine_tuned=comparison(tuned, shot, tuned - shot - 0.05, tuned - shot + 0.05),
            quality_interval=shot_interval,
        ),
    ]


def advice_for(
    opts: list[Option],
    *,
    training_examples: int = 600,
    label_counts: dict[str, int] | None = None,
    target: float | None = None,
):
    return advise(
        opts,
        monthly_requests=100_000,
        horizon_months=12,
        training_examples=training_examples,
        train_loss=None,
        val_loss=None,
        version_history=[],
        metric_label="exact match",
        training_label_counts=label_counts,
        quality_target=target,
    )


# -- insufficient data per label ----------------------------------------------------------------


def test_eight_and_a_half_examples_a_label_is_insufficient_although_the_total_passes():
    counts = sixty_labels_of_eight_or_nine()
    assert insufficient_data(sum(counts.values())) is None  # 510: the total alone passes

    pitfall = insufficient_data(sum(counts.values()), counts)

    assert pitfall is not None and pitfall.code == "insufficient_data"
    assert pitfall.title == "Insufficient data per label"
    assert "60 of 60 labels have fewer than 10 training examples (8.5 a label" in (
        pitfall.explanation
    )
    assert "and 50 more" in pitfall.explanation
    assert len(pitfall.details) == 60
    assert pitfall.details[0][1] == 8 and pitfall.details[-1][1] == 9
    assert dict(pitfall.details) == counts


def test_labels_at_the_threshold_pass_and_only_those_under_it_are_listed():
    counts = {"billing": MIN_TRAINING_EXAMPLES_PER_LABEL, "refund": 40, "<b>rare</b>": 3}
    assert insufficient_data(200, {"billing": 10, "refund": 40}) is None

    pitfall = insufficient_data(200, counts)

    assert pitfall is not None
    assert pitfall.details == (("<b>rare</b>", 3),)
    assert "1 of 3 labels" in pitfall.explanation and "'<b>rare</b>' (3)" in pitfall.explanation


def test_a_small_total_and_thin_labels_are_both_said():
    pitfall = insufficient_data(40, {"a": 20, "b": 20, "c": 0})
    assert pitfall is not None
    assert pitfall.explanation.startswith("Only 40 training examples, fewer than 100.")
    assert "1 of 3 labels" in pitfall.explanation


def test_thin_labels_keep_the_advice_from_saying_fine_tune():
    counts = sixty_labels_of_eight_or_nine()
    confident = advice_for(options(tuned=0.9, shot=0.1), training_examples=510)
    assert confident.recommendation.startswith("Fine-tune")

    doubtful = advice_for(options(tuned=0.9, shot=0.1), training_examples=510, label_counts=counts)

    assert doubtful.recommendation.startswith("Not enough evidence yet")
    assert "insufficient data per label" in doubtful.recommendation


# -- the quality target -------------------------------------------------------------------------


def test_below_the_target_neither_option_is_good_enough_with_the_numbers():
    without = advice_for(options())
    assert without.recommendation.startswith("Fine-tune")
    assert without.target is None

    below = advice_for(options(), target=0.8)

    assert below.target is not None and not below.target.met
    assert below.recommendation.startswith("Neither option is good enough")
    assert "fine-tuned v1, scores 39.6 % exact match" in below.recommendation
    assert "(95 % CI 34.3 % to 45.2 %)" in below.recommendation
    assert "below the target of 80.0 %" in below.recommendation
    assert "reaches the target" not in below.recommendation
    # The table and the pitfalls are still there to say why.
    assert [row.name for row in below.rows] == ["fine-tuned v1", "5-shot"]


def test_the_best_option_may_be_the_prompt_and_is_the_one_named():
    advice = advice_for(options(tuned=0.30, shot=0.55, interval=None), target=0.9)
    assert advice.target is not None and advice.target.best == "5-shot"
    assert "the best, 5-shot, scores 55.0 % exact match, below" in advice.recommendation


def test_an_interval_that_reaches_the_target_is_said():
    advice = advice_for(options(tuned=0.76, shot=0.1, interval=(0.70, 0.82)), target=0.8)
    assert advice.recommendation.startswith("Neither option is good enough")
    assert "which reaches the target" in advice.recommendation


@pytest.mark.parametrize("target", [0.396, 0.25])
def test_a_target_met_leaves_the_recommendation_as_it_was(target):
    without = advice_for(options())
    met = advice_for(options(), target=target)
    assert met.target is not None and met.target.met
    assert met.recommendation == without.recommendation


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, math.nan, math.inf])
def test_a_target_outside_zero_to_one_is_refused(target):
    with pytest.raises(ValueError, match="quality_target"):
        target_check(options(), target)


def test_an_option_interval_must_be_ordered():
    with pytest.raises(ValueError, match="quality_interval"):
        options(interval=(0.5, 0.4))


def test_the_interval_of_a_rate_is_wilsons_and_of_a_mean_the_normal_one():
    assert quality_interval([1.0] * 40 + [0.0] * 60, binary=True) == wilson_interval(40, 100)
    low, high = quality_interval([0.2, 0.4, 0.6, 0.8], binary=False) or (0, 0)
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)
    assert quality_interval([], binary=True) is None


# -- from a finished evaluation, and on the page ------------------------------------------------


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def intents(project: Project, lead: User) -> DatasetVersion:
    """60 labels of 10 examples, frozen per label: 8 or 9 training examples a label."""
    dataset = Dataset.objects.create(project=project, name="intents")
    label_set_dataset(
        dataset, dict.fromkeys(label_names(60, random.Random(7)), 10), random.Random(7)
    )
    return dataset_version_freeze(dataset=dataset, user=lead)


def tuned_against_few_shot(
    version: DatasetVersion, lead: User, base_model: BaseModel, tuned: float, shot: float
) -> EvalRun:
    model_version = register_model_version(
        version=version, base_model=base_model, user=lead, model_name="intents"
    )
    items = version.validation_count
    return finished_run(
        version=version,
        user=lead,
        answers=[
            (
                CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=model_version),
                [i < round(tuned * items) for i in range(items)],
            ),
            (
                CandidateSpec(
                    kind=CandidateKind.BASE,
                    base_model=base_model,
                    prompting=Prompting.FEW_SHOT,
                    few_shot_k=5,
                ),
                [i < round(shot * items) for i in range(items)],
            ),
        ],
    )


@pytest.mark.django_db
def test_run_advice_counts_training_examples_per_label_and_checks_the_target(
    intents: DatasetVersion, lead: User, base_model: BaseModel
) -> None:
    run = tuned_against_few_shot(intents, lead, base_model, tuned=0.4, shot=0.02)
    before = run_advice(run, monthly_requests=100_000, horizon_months=12)
    pitfall = next(p for p in before.advice.pitfalls if p.code == "insufficient_data")
    assert len(pitfall.details) == 60 and all(count in (8, 9) for _, count in pitfall.details)
    assert before.advice.target is None
    assert not before.advice.recommendation.startswith("Neither")

    dataset_quality_target_set(dataset=intents.dataset, quality_target=0.8)
    intents.dataset.refresh_from_db()
    after = run_advice(run, monthly_requests=100_000, horizon_months=12)

    check = after.advice.target
    assert check is not None and check.target == 0.8 and after.target_dataset == intents.dataset
    tuned_right = round(0.4 * intents.validation_count)
    assert check.best_quality == pytest.approx(tuned_right / intents.validation_count)
    assert check.best_interval == pytest.approx(
        wilson_interval(tuned_right, intents.validation_count)
    )
    assert after.advice.recommendation.startswith("Neither option is good enough")


@pytest.mark.django_db
def test_the_advice_page_shows_the_target_the_verdict_and_every_thin_label(
    intents: DatasetVersion,
    lead: User,
    base_model: BaseModel,
    project: Project,
    make_member: Callable[..., User],
    client: Client,
) -> None:
    run = tuned_against_few_shot(intents, lead, base_model, tuned=0.4, shot=0.02)
    url = reverse("eval_advice", args=[project.pk, run.pk])
    client.force_login(make_member(Role.MANAGER))

    unset = client.get(url).content.decode()
    assert "No quality target is set for intents" in unset
    dataset_quality_target_set(dataset=intents.dataset, quality_target=0.8)
    html = client.get(url).content.decode()

    assert 'id="quality-target-verdict"' in html
    assert "below the target, neither option is good enough" in html
    assert "Quality target of intents: 80.0 % exact match" in " ".join(html.split())
    assert html.count("<tr><td><code>") == 60  # every label under the threshold, with its count
    assert "&lt;b&gt;card&lt;/b&gt; &amp; &quot;lost&quot;" in html
    assert "<b>card</b>" not in html
