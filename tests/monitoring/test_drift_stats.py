"""The drift engine (``monitoring.drift_stats``) on generated support traffic, with the real
sentence embedder: a window from the reference's own generator raises nothing, a shifted one
raises every figure and puts its shifted requests first; the statistics against values
computed another way; empty and tiny inputs answered, not crashed."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from bench.drift import NEW_TOPICS, Request, traffic
from monitoring.drift_stats import (
    EMBEDDING_DRIFT_AUC,
    LABEL_DRIFT_PSI,
    LANGUAGE_DRIFT,
    LENGTH_DRIFT,
    OOV_SHARE,
    PII_SHARE,
    UNKNOWN_LANGUAGE,
    UNSEEN_LABEL_SHARE,
    DriftResult,
    DriftSample,
    chi_square_goodness_of_fit,
    drift_figures,
    label_drift,
    language_of,
    length_figure,
    nearest_reference_similarity,
    oov_share,
    pii_figure,
    population_stability_index,
    reference_oov_share,
)
from monitoring.embedding import EMBEDDING_DIM, SentenceEmbedder, sentence_embedder
from monitoring.models import DRIFT_FIGURES

WINDOW = 2000
EMBEDDING_CAP = 1000
SHIFTED_SHARE = 0.3


def sample_of(requests: list[Request]) -> DriftSample:
    return DriftSample([r.text for r in requests], [r.label for r in requests])


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return sentence_embedder()


@pytest.fixture(scope="module")
def reference() -> list[Request]:
    return traffic(WINDOW, seed=11)


@pytest.fixture(scope="module")
def stable(reference: list[Request], embedder: SentenceEmbedder) -> DriftResult:
    window = traffic(WINDOW, seed=12)
    return drift_figures(
        sample_of(reference), sample_of(window), embedder=embedder, embedding_cap=EMBEDDING_CAP
    )


@pytest.fixture(scope="module")
def shifted_window() -> list[Request]:
    return traffic(WINDOW, seed=13, shifted_share=SHIFTED_SHARE)


@pytest.fixture(scope="module")
def shifted(
    reference: list[Request],
    shifted_window: list[Request],
    stable: DriftResult,
    embedder: SentenceEmbedder,
) -> DriftResult:
    # The reference's embeddings from the stable report, as the caller caches them.
    return drift_figures(
        sample_of(reference),
        sample_of(shifted_window),
        embedder=embedder,
        embedding_cap=EMBEDDING_CAP,
        reference_embeddings=stable.reference_embeddings,
    )


# ---------------------------------------------------------------------------
# Generated traffic
# ---------------------------------------------------------------------------


def test_a_window_from_the_reference_generator_raises_no_drift(stable: DriftResult) -> None:
    assert {figure.name for figure in stable.figures} == set(DRIFT_FIGURES)
    for figure in stable.figures:
        assert figure.current is not None, figure.name
        assert not figure.drifted, figure
    assert not stable.drifted
    auc = stable.figure(EMBEDDING_DRIFT_AUC).current
    assert auc is not None and auc < 0.55


def test_a_shifted_window_raises_every_figure(
    shifted: DriftResult, shifted_window: list[Request]
) -> None:
    drifted = {figure.name for figure in shifted.figures if figure.drifted}

    assert drifted == set(DRIFT_FIGURES)
    assert shifted.drifted
    length = shifted.figure(LENGTH_DRIFT)
    assert length.details["current_mean_chars"] > length.details["reference_mean_chars"]
    languages = shifted.figure(LANGUAGE_DRIFT).details["current_shares"]
    assert {"de", "es", "fr"} <= set(languages)
    pii = shifted.figure(PII_SHARE)
    assert pii.current is not None and pii.reference is not None
    assert pii.current > pii.reference
    unseen = shifted.figure(UNSEEN_LABEL_SHARE)
    new_labels = [r.label for r in shifted_window if r.label in NEW_TOPICS]
    assert set(unseen.details["unseen_labels"]) == set(new_labels)
    assert unseen.current == pytest.approx(len(new_labels) / len(shifted_window))


def test_the_shifted_requests_rank_first_among_the_most_drifted(
    shifted: DriftResult,
    shifted_window: list[Request],
    reference: list[Request],
    embedder: SentenceEmbedder,
) -> None:
    examples = shifted.most_drifted

    assert len(examples) == 20
    assert all(shifted_window[example.index].shifted for example in examples)
    similarities = [example.similarity for example in examples]
    assert similarities == sorted(similarities)
    # Each index names the current text whose similarity it reports.
    embeddings = shifted.reference_embeddings
    assert embeddings is not None
    first = embedder.embed([shifted_window[examples[0].index].text])
    assert float((embeddings.vectors @ first[0]).max()) == pytest.approx(
        examples[0].similarity, abs=1e-3
    )
    assert len(embeddings.rows) == EMBEDDING_CAP and max(embeddings.rows) < len(reference)


def test_a_cached_reference_is_used_and_one_from_another_embedder_is_not(
    stable: DriftResult, shifted: DriftResult, embedder: SentenceEmbedder
) -> None:
    assert "embed_reference" in stable.seconds
    assert "embed_reference" not in shifted.seconds
    assert shifted.reference_embeddings is stable.reference_embeddings
    assert shifted.sampled and shifted.n_current_embedded == EMBEDDING_CAP

    cached = stable.reference_embeddings
    assert cached is not None
    foreign = replace(cached, fingerprint="another model")
    texts = [f"request {n} about the billing page" for n in range(12)]
    again = drift_figures(
        DriftSample(texts), DriftSample(texts), embedder=embedder, reference_embeddings=foreign
    )
    assert "embed_reference" in again.seconds
    assert again.reference_embeddings is not None
    assert again.reference_embeddings.fingerprint == embedder.fingerprint


def test_the_report_is_json(shifted: DriftResult) -> None:
    encoded = json.loads(json.dumps(shifted.as_json(), allow_nan=False))

    assert encoded["drifted"] is True
    assert {figure["name"] for figure in encoded["figures"]} == set(DRIFT_FIGURES)
    assert encoded["n_current"] == WINDOW and encoded["sampled"] is True


# ---------------------------------------------------------------------------
# Statistics, checked against values computed another way
# ---------------------------------------------------------------------------


def test_psi_matches_its_formula_worked_by_hand() -> None:
    psi = population_stability_index({"a": 50, "b": 50}, {"a": 70, "b": 30})

    assert psi == pytest.approx(0.2 * math.log(0.7 / 0.5) + (-0.2) * math.log(0.3 / 0.5))
    assert population_stability_index({"a": 10, "b": 30}, {"b": 3, "a": 1}) == pytest.approx(0)


def test_psi_counts_a_new_category_at_epsilon() -> None:
    psi = population_stability_index({"en": 10}, {"en": 5, "de": 5}, epsilon=1e-4)

    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi == pytest.approx(expected)


def test_chi_square_matches_the_textbook_sum() -> None:
    reference = {"billing": 40, "bug": 40, "account": 20}
    current = {"billing": 30, "bug": 50, "account": 20}

    fit = chi_square_goodness_of_fit(reference, current)

    expected = {"billing": 40.0, "bug": 40.0, "account": 20.0}  # 100 answers at 40/40/20 %
    statistic = sum((current[k] - expected[k]) ** 2 / expected[k] for k in expected)
    assert fit.statistic == pytest.approx(statistic)
    assert fit.p_value == pytest.approx(stats.chi2.sf(statistic, df=2))
    assert fit.degrees_of_freedom == 2


def test_label_drift_names_the_labels_never_trained_on() -> None:
    reference = ["billing"] * 50 + ["bug"] * 50
    current = ["billing"] * 40 + ["bug"] * 40 + ["security"] * 15 + ["privacy"] * 5

    psi_figure, unseen = label_drift(reference, current)

    assert psi_figure.name == LABEL_DRIFT_PSI and psi_figure.drifted
    by_hand = (
        2 * (0.4 - 0.5) * math.log(0.4 / 0.5)
        + (0.15 - 1e-4) * math.log(0.15 / 1e-4)
        + (0.05 - 1e-4) * math.log(0.05 / 1e-4)
    )
    assert psi_figure.current == pytest.approx(by_hand)
    assert psi_figure.p_value is not None and psi_figure.p_value < 1e-6
    assert unseen.current == pytest.approx(0.2) and unseen.drifted
    assert unseen.details["unseen_labels"] == {"security": 15, "privacy": 5}


def test_the_same_labels_in_the_same_shares_do_not_drift() -> None:
    psi_figure, unseen = label_drift(["a", "b"] * 30, ["b", "a"] * 10)

    assert psi_figure.current == pytest.approx(0) and not psi_figure.drifted
    assert psi_figure.p_value == pytest.approx(1.0)
    assert unseen.current == 0 and not unseen.drifted


def test_lengths_shifted_by_one_standard_deviation_are_one_unit_apart() -> None:
    lengths = np.random.default_rng(0).integers(20, 400, size=500)
    spread = float(np.std(lengths))

    figure = length_figure(lengths, lengths + spread)

    assert figure.current == pytest.approx(1.0)
    assert figure.drifted
    assert not length_figure(lengths, lengths.copy()).drifted


def test_small_windows_from_one_distribution_rarely_drift_in_length() -> None:
    rng = np.random.default_rng(2)
    figures = [
        length_figure(rng.integers(20, 400, size=30), rng.integers(20, 400, size=30))
        for _ in range(100)
    ]

    # The distance alone is noisy at 30 requests; with the K-S test's say, few are called.
    assert sum(figure.statistic is not None and figure.statistic > 0.1 for figure in figures) > 50
    assert sum(figure.drifted for figure in figures) <= 10


def test_pii_share_uses_the_two_proportion_test() -> None:
    reference = np.array([True] * 40 + [False] * 960)
    current = np.array([True] * 90 + [False] * 910)

    figure = pii_figure(reference, current)

    table = [[90, 910], [40, 960]]
    _, p_value, _, _ = stats.chi2_contingency(table, correction=False)  # the z-test squared
    assert figure.p_value == pytest.approx(p_value)
    assert figure.current == pytest.approx(0.09) and figure.reference == pytest.approx(0.04)
    assert figure.drifted
    # Significant in a big window, but under the margin: not worth an alert.
    big_reference = np.array([True] * 400 + [False] * 99_600)
    big_current = np.array([True] * 550 + [False] * 99_450)
    small_shift = pii_figure(big_reference, big_current)
    assert small_shift.p_value is not None and small_shift.p_value < 0.05
    assert not small_shift.drifted


def test_oov_share_counts_words_outside_the_vocabulary() -> None:
    assert oov_share(["refund", "please", "schnell", "bitte"], {"refund", "please"}) == 0.5
    assert oov_share([], {"refund"}) is None
    # The same words everywhere: any half knows all of them.
    assert reference_oov_share(["refund my invoice"] * 10) == 0
    # Every text its own words: the other half never knows them.
    assert reference_oov_share([f"word{chr(97 + n)} only{chr(97 + n)}" for n in range(10)]) == 1


def test_language_is_unknown_for_a_short_text() -> None:
    assert language_of("danke") == UNKNOWN_LANGUAGE
    assert language_of("Ich kann mich seit gestern nicht mehr bei meinem Konto anmelden.") == "de"


def test_nearest_similarity_in_chunks_is_the_full_product() -> None:
    rng = np.random.default_rng(1)
    current, reference = rng.standard_normal((11, 8)), rng.standard_normal((7, 8))

    chunked = nearest_reference_similarity(current, reference, chunk_rows=3)

    np.testing.assert_allclose(chunked, (current @ reference.T).max(axis=1), rtol=1e-5)


# ---------------------------------------------------------------------------
# Empty and tiny inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference_texts", "current_texts"),
    [([], []), ([], ["where is my invoice?"]), (["where is my invoice?"], []), (["a"], ["b"])],
)
def test_empty_and_tiny_windows_give_a_report_without_drift(
    reference_texts: list[str], current_texts: list[str], embedder: SentenceEmbedder
) -> None:
    result = drift_figures(
        DriftSample(reference_texts, []),
        DriftSample(current_texts, []),
        embedder=embedder,
    )

    assert not result.drifted
    assert {figure.name for figure in result.figures} == set(DRIFT_FIGURES)
    auc = result.figure(EMBEDDING_DRIFT_AUC)
    assert auc.current is None and "needs" in auc.note
    assert result.figure(LABEL_DRIFT_PSI).note
    json.dumps(result.as_json(), allow_nan=False)


def test_a_tiny_window_still_gets_its_descriptor_figures(embedder: SentenceEmbedder) -> None:
    reference = ["Where is my invoice for March?", "The upload stops at ninety percent."]
    current = ["Wo ist meine Rechnung für März? Bitte schnell antworten."]

    result = drift_figures(DriftSample(reference), DriftSample(current), embedder=embedder)

    assert result.figure(OOV_SHARE).current is not None
    assert result.figure(LENGTH_DRIFT).current is not None
    assert result.figure(EMBEDDING_DRIFT_AUC).current is None
    assert [example.index for example in result.most_drifted] == [0]
    names = {figure.name for figure in result.figures}
    assert LABEL_DRIFT_PSI not in names  # no labels given: no label figures


# ---------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------


def test_embeddings_are_unit_rows_in_input_order(embedder: SentenceEmbedder) -> None:
    texts = [
        "My invoice is wrong.",
        "The export page stays blank in Firefox since the last update, please help.",
        "My invoice is wrong.",
    ]

    vectors = embedder.embed(texts)

    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    alone = embedder.embed([texts[1]])  # batched with padding or alone: the same vector
    assert float(alone[0] @ vectors[1]) > 0.999
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)
