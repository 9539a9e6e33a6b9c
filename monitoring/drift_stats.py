"""Drift between a reference (the texts a model was trained on, and their labels) and a window
of live requests (and the labels the model answered): pure functions over plain data, no
Django, results that serialise to JSON. ``monitoring.drift`` reads the rows and stores the
report; this module only computes.

The figures, each a :class:`DriftFigure` whose ``current`` is what an alert rule compares with
its threshold (``monitoring.models.Figure`` names them):

- ``length_drift``: Wasserstein distance between the character lengths, in reference standard
  deviations; drift above 0.1 (Evidently's default for numeric columns) when a two-sample
  Kolmogorov-Smirnov test agrees (p < 0.05), so a small window's noise is no drift;
- ``oov_share``: the current mean share of words outside the training vocabulary, against the
  reference's own share (a held-out half measured with a vocabulary from the other half);
  drift when the current share is more than OOV_MARGIN above it;
- ``language_drift``: PSI over the shares of each language (py3langid); drift at 0.2 or more;
- ``pii_share``: share of requests with personal data (``datasets.quality.analyzers.find_pii``),
  the two-proportion z-test of ``evaluation.statistics.compare_rates``; drift when p < 0.05
  and the shares differ by PII_MARGIN or more;
- ``embedding_drift_auc``: a domain classifier (logistic regression on sentence embeddings,
  reference against current, balanced, cross-validated ROC AUC); drift above 0.55, as
  Evidently does for text;
- ``label_drift_psi`` and ``unseen_label_share``: for label contracts, PSI over the answered
  labels' shares with a chi-square goodness-of-fit test, and the share of answered labels the
  reference never had.

Descriptors cover every request; the embedding stage (classifier and most drifted requests)
works on a seeded sample of at most ``embedding_cap`` requests a side, because embedding is the
costly part (bench/drift.py measures both the cost and how stable the AUC stays).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from datasets.quality.analyzers import find_pii
from evaluation.statistics import compare_rates

EMBEDDING_DRIFT_AUC = "embedding_drift_auc"
LENGTH_DRIFT = "length_drift"
OOV_SHARE = "oov_share"
PII_SHARE = "pii_share"
LANGUAGE_DRIFT = "language_drift"
LABEL_DRIFT_PSI = "label_drift_psi"
UNSEEN_LABEL_SHARE = "unseen_label_share"

AUC_THRESHOLD = 0.55
LENGTH_THRESHOLD = 0.1
# A vocabulary from half the reference already misses more words than the whole reference's
# does, so the reference's share is a generous baseline; five points of words on top leave room
# for a small window's noise, while a tenth of requests in a language the reference never had
# adds about eight (their words are 84 % unknown in bench/drift.py's traffic).
OOV_MARGIN = 0.05
PSI_THRESHOLD = 0.2
P_VALUE_THRESHOLD = 0.05
# Two points of requests: below that a significant difference in a big window is no news.
PII_MARGIN = 0.02
# An empty bin's share in PSI (Evidently's choice), so a new category counts without log(0).
PSI_EPSILON = 1e-4

UNKNOWN_LANGUAGE = "unknown"
# Below this many characters py3langid guesses; below this confidence it is not sure.
LANGUAGE_MIN_CHARS = 20
LANGUAGE_MIN_CONFIDENCE = 0.5
# The language of a request shows in its opening; a pasted document must not cost milliseconds.
LANGUAGE_PREFIX_CHARS = 300

# Requests a side the embedding stage sees. On the bench's traffic the AUC over ten seeded draws
# spread (sd) 0.017 at 1,000, 0.014 at 2,000, 0.004 at 3,000 and 0.006 at 4,000, each mean within
# 0.005 of all 10,000; 3,000 current requests embed in about four seconds on two cores.
DEFAULT_EMBEDDING_CAP = 3000
DEFAULT_MOST_DRIFTED = 20
CLASSIFIER_FOLDS = 5
MIN_CLASSIFIER_PER_SIDE = 10
# Current rows whose similarities are computed at once: 4,096 x 10,000 float32 is 160 MB.
SIMILARITY_CHUNK_ROWS = 4096

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")

T = TypeVar("T")


class TextEmbedder(Protocol):
    """What the embedding stage needs (``monitoring.embedding.SentenceEmbedder`` is one)."""

    @property
    def fingerprint(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftFigure:
    """One drift figure. ``current`` is what an alert rule compares with ``threshold``;
    ``reference`` is the same figure's value for the reference itself (0.5 for an AUC, 0 for
    a distance or a PSI); ``statistic`` is what decides ``drifted``; ``note`` says why a
    figure could not be computed (its values are then None and it is not drifted)."""

    name: str
    method: str
    reference: float | None
    current: float | None
    statistic: float | None
    threshold: float
    drifted: bool
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "reference": _finite(self.reference),
            "current": _finite(self.current),
            "statistic": _finite(self.statistic),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "p_value": _finite(self.p_value),
            "details": self.details,
            "note": self.note,
        }


@dataclass(frozen=True)
class DriftedExample:
    """A current request (its index in the current texts) and its cosine similarity to the
    closest reference text."""

    index: int
    similarity: float


@dataclass(frozen=True)
class ReferenceEmbeddings:
    """The reference's embedded sample: which rows of the reference texts, their vectors, and
    the embedder's fingerprint. A caller caches it by the reference's content hash."""

    rows: np.ndarray  # int64, indices into the reference texts
    vectors: np.ndarray  # float32 (len(rows), dim), unit length
    fingerprint: str


@dataclass(frozen=True)
class DriftSample:
    """Texts (one per request) and, for label contracts, the labels answered (or trained on);
    labels need not line up with texts."""

    texts: Sequence[str]
    labels: Sequence[str] | None = None


@dataclass(frozen=True)
class DriftResult:
    figures: list[DriftFigure]
    most_drifted: list[DriftedExample]
    n_reference: int
    n_current: int
    n_reference_embedded: int
    n_current_embedded: int
    seconds: dict[str, float]
    reference_embeddings: ReferenceEmbeddings | None

    @property
    def drifted(self) -> bool:
        return any(figure.drifted for figure in self.figures)

    @property
    def sampled(self) -> bool:
        """Whether the embedding stage saw fewer requests than there were."""
        embedded = (self.n_reference_embedded, self.n_current_embedded)
        return embedded != (self.n_reference, self.n_current)

    def figure(self, name: str) -> DriftFigure:
        return next(figure for figure in self.figures if figure.name == name)

    def as_json(self) -> dict[str, Any]:
        """Everything but the reference's vectors, which the caller caches on its own."""
        return {
            "drifted": self.drifted,
            "figures": [figure.as_json() for figure in self.figures],
            "most_drifted": [
                {"index": example.index, "similarity": round(example.similarity, 6)}
                for example in self.most_drifted
            ],
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "n_reference_embedded": self.n_reference_embedded,
            "n_current_embedded": self.n_current_embedded,
            "sampled": self.sampled,
            "seconds": {stage: round(value, 4) for stage, value in self.seconds.items()},
        }


# ---------------------------------------------------------------------------
# Text descriptors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDescriptors:
    """One request's descriptors; ``oov_share`` is None for a text without words (or when
    no vocabulary was given)."""

    chars: int
    words: int
    oov_share: float | None
    language: str
    has_pii: bool


@dataclass(frozen=True)
class DescriptorColumns:
    """The descriptors of many texts, a column each, in the texts' order."""

    chars: np.ndarray  # int64
    words: np.ndarray  # int64
    oov_share: np.ndarray  # float64, NaN where a text has no words
    languages: list[str]
    has_pii: np.ndarray  # bool


def words_of(text: str) -> list[str]:
    """The lowercased words of a text: runs of letters, apostrophes inside; no digits."""
    return _WORD.findall(text.lower())


def training_vocabulary(texts: Iterable[str]) -> frozenset[str]:
    return frozenset(word for text in texts for word in words_of(text))


def oov_share(words: Sequence[str], vocabulary: AbstractSet[str]) -> float | None:
    if not words:
        return None
    return sum(word not in vocabulary for word in words) / len(words)


@functools.cache
def _language_identifier() -> LanguageIdentifier:
    # Normalised probabilities give a confidence to stop at; the model ships inside py3langid.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(text: str) -> str:
    """An ISO 639-1 code, or "unknown" for a short or uncertain text."""
    stripped = text.strip()
    if len(stripped) < LANGUAGE_MIN_CHARS:
        return UNKNOWN_LANGUAGE
    language, confidence = _language_identifier().classify(stripped[:LANGUAGE_PREFIX_CHARS])
    return str(language) if confidence >= LANGUAGE_MIN_CONFIDENCE else UNKNOWN_LANGUAGE


def has_personal_data(text: str) -> bool:
    return bool(find_pii(text))


def text_descriptors(text: str, vocabulary: AbstractSet[str] | None = None) -> TextDescriptors:
    words = words_of(text)
    return TextDescriptors(
        chars=len(text),
        words=len(words),
        oov_share=None if vocabulary is None else oov_share(words, vocabulary),
        language=language_of(text),
        has_pii=has_personal_data(text),
    )


def descriptor_columns(
    texts: Sequence[str], vocabulary: AbstractSet[str] | None = None
) -> DescriptorColumns:
    """:func:`text_descriptors` of every text, each distinct text described once."""
    described: dict[str, TextDescriptors] = {}
    for text in texts:
        if text not in described:
            described[text] = text_descriptors(text, vocabulary)
    rows = [described[text] for text in texts]
    return DescriptorColumns(
        chars=np.fromiter((row.chars for row in rows), dtype=np.int64, count=len(rows)),
        words=np.fromiter((row.words for row in rows), dtype=np.int64, count=len(rows)),
        oov_share=np.fromiter(
            (math.nan if row.oov_share is None else row.oov_share for row in rows),
            dtype=np.float64,
            count=len(rows),
        ),
        languages=[row.language for row in rows],
        has_pii=np.fromiter((row.has_pii for row in rows), dtype=bool, count=len(rows)),
    )


def reference_oov_share(reference_texts: Sequence[str], *, seed: int = 0) -> float | None:
    """The reference's own out-of-vocabulary share: the mean share of a seeded half of its
    texts against a vocabulary built from the other half (None below two texts)."""
    if len(reference_texts) < 2:
        return None
    order = np.random.default_rng([seed, 1]).permutation(len(reference_texts))
    half = len(order) // 2
    vocabulary = training_vocabulary(reference_texts[row] for row in order[:half])
    shares = [oov_share(words_of(reference_texts[row]), vocabulary) for row in order[half:]]
    measured = [share for share in shares if share is not None]
    return float(np.mean(measured)) if measured else None


# ---------------------------------------------------------------------------
# Distribution statistics
# ---------------------------------------------------------------------------


def shares(counts: Mapping[str, int], categories: Sequence[str]) -> np.ndarray:
    total = sum(counts.values())
    return np.array([counts.get(name, 0) / total for name in categories], dtype=np.float64)


def population_stability_index(
    reference_counts: Mapping[str, int],
    current_counts: Mapping[str, int],
    *,
    epsilon: float = PSI_EPSILON,
) -> float:
    """PSI = sum over categories of (current - reference share) x ln(current / reference),
    an empty bin's share taken as ``epsilon``. Both sides need at least one count."""
    if not sum(reference_counts.values()) or not sum(current_counts.values()):
        raise ValueError("PSI needs at least one count on each side")
    categories = sorted(set(reference_counts) | set(current_counts))
    reference = np.maximum(shares(reference_counts, categories), epsilon)
    current = np.maximum(shares(current_counts, categories), epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


@dataclass(frozen=True)
class GoodnessOfFit:
    statistic: float
    p_value: float
    degrees_of_freedom: int


def chi_square_goodness_of_fit(
    reference_counts: Mapping[str, int],
    current_counts: Mapping[str, int],
    *,
    epsilon: float = PSI_EPSILON,
) -> GoodnessOfFit:
    """Current counts against the reference's proportions (scipy.stats.chisquare). A label
    the reference never had is expected with ``epsilon``'s share, proportions renormalised,
    so it weighs in (heavily) instead of dividing by zero."""
    categories = sorted(set(reference_counts) | set(current_counts))
    observed = np.array([current_counts.get(name, 0) for name in categories], dtype=np.float64)
    proportions = np.maximum(shares(reference_counts, categories), epsilon)
    expected = proportions / proportions.sum() * observed.sum()
    if len(categories) < 2:
        return GoodnessOfFit(statistic=0.0, p_value=1.0, degrees_of_freedom=0)
    result = stats.chisquare(f_obs=observed, f_exp=expected)
    return GoodnessOfFit(
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        degrees_of_freedom=len(categories) - 1,
    )


def normalised_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein distance in reference standard deviations; a reference of one length has
    its spread taken as one unit, so any change reads as that many units."""
    spread = max(float(np.std(reference)), 1.0)
    return float(stats.wasserstein_distance(reference, current)) / spread


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _not_computed(name: str, method: str, threshold: float, note: str) -> DriftFigure:
    return DriftFigure(name, method, None, None, None, threshold, False, note=note)


def length_figure(reference_chars: np.ndarray, current_chars: np.ndarray) -> DriftFigure:
    """Drift when the normalised distance is above 0.1 and the two-sample Kolmogorov-Smirnov
    test agrees (p < 0.05): the distance alone is noisy in small windows (Evidently uses the
    K-S test alone below 1,000 rows), and in large ones the test agrees whenever it matters."""
    method = (
        "Wasserstein distance of character lengths, in reference standard deviations, "
        "with a two-sample Kolmogorov-Smirnov test"
    )
    if not len(reference_chars) or not len(current_chars):
        return _not_computed(LENGTH_DRIFT, method, LENGTH_THRESHOLD, _missing_side_note())
    distance = normalised_wasserstein(reference_chars, current_chars)
    p_value = float(stats.ks_2samp(reference_chars, current_chars).pvalue)
    return DriftFigure(
        LENGTH_DRIFT,
        method,
        reference=0.0,
        current=distance,
        statistic=distance,
        threshold=LENGTH_THRESHOLD,
        drifted=distance > LENGTH_THRESHOLD and p_value < P_VALUE_THRESHOLD,
        p_value=p_value,
        details={
            "reference_mean_chars": _rounded(float(np.mean(reference_chars))),
            "current_mean_chars": _rounded(float(np.mean(current_chars))),
            "reference_std_chars": _rounded(float(np.std(reference_chars))),
        },
    )


def oov_figure(reference_share: float | None, current_shares: np.ndarray) -> DriftFigure:
    method = (
        "Mean share of words outside the training vocabulary; the reference's share is a "
        f"held-out half against the other half's vocabulary; drift above it by {OOV_MARGIN:g}"
    )
    measured = current_shares[~np.isnan(current_shares)]
    if reference_share is None or not len(measured):
        note = "needs two reference texts and a current text with words"
        return _not_computed(OOV_SHARE, method, OOV_MARGIN, note)
    current = float(np.mean(measured))
    excess = current - reference_share
    return DriftFigure(
        OOV_SHARE,
        method,
        reference=reference_share,
        current=current,
        statistic=excess,
        threshold=OOV_MARGIN,
        drifted=excess > OOV_MARGIN,
        details={"current_texts_with_words": len(measured)},
    )


def language_figure(reference: Sequence[str], current: Sequence[str]) -> DriftFigure:
    method = "Population stability index over the shares of each language (py3langid)"
    if not reference or not current:
        return _not_computed(LANGUAGE_DRIFT, method, PSI_THRESHOLD, _missing_side_note())
    reference_counts, current_counts = Counter(reference), Counter(current)
    psi = population_stability_index(reference_counts, current_counts)
    return DriftFigure(
        LANGUAGE_DRIFT,
        method,
        reference=0.0,
        current=psi,
        statistic=psi,
        threshold=PSI_THRESHOLD,
        drifted=psi >= PSI_THRESHOLD,
        details={
            "reference_shares": _share_map(reference_counts),
            "current_shares": _share_map(current_counts),
        },
    )


def pii_figure(reference_pii: np.ndarray, current_pii: np.ndarray) -> DriftFigure:
    method = (
        "Share of requests with personal data; two-proportion z-test, drift when p < "
        f"{P_VALUE_THRESHOLD:g} and the shares differ by {PII_MARGIN:g} or more"
    )
    if not len(reference_pii) or not len(current_pii):
        return _not_computed(PII_SHARE, method, PII_MARGIN, _missing_side_note())
    comparison = compare_rates(
        int(current_pii.sum()), len(current_pii), int(reference_pii.sum()), len(reference_pii)
    )
    difference = comparison.difference
    drifted = comparison.p_value < P_VALUE_THRESHOLD and abs(difference) >= PII_MARGIN
    return DriftFigure(
        PII_SHARE,
        method,
        reference=comparison.rate_b,
        current=comparison.rate_a,
        statistic=difference,
        threshold=PII_MARGIN,
        drifted=drifted,
        p_value=comparison.p_value,
    )


def label_drift(
    reference_labels: Sequence[str], current_labels: Sequence[str]
) -> tuple[DriftFigure, DriftFigure]:
    """Output drift of a label contract: ``label_drift_psi`` (drift when PSI >= 0.2 and the
    chi-square test agrees, p < 0.05: PSI alone swings on a handful of answers) and
    ``unseen_label_share`` (drift when any answered label was never in the reference)."""
    psi_method = (
        "Population stability index over the answered labels' shares, with a chi-square "
        "goodness-of-fit test of the current counts against the reference's proportions"
    )
    unseen_method = "Share of answered labels that the reference never had"
    if not reference_labels or not current_labels:
        note = _missing_side_note("labels")
        return (
            _not_computed(LABEL_DRIFT_PSI, psi_method, PSI_THRESHOLD, note),
            _not_computed(UNSEEN_LABEL_SHARE, unseen_method, 0.0, note),
        )
    reference_counts, current_counts = Counter(reference_labels), Counter(current_labels)
    psi = population_stability_index(reference_counts, current_counts)
    fit = chi_square_goodness_of_fit(reference_counts, current_counts)
    unseen = {
        label: count for label, count in current_counts.items() if not reference_counts[label]
    }
    unseen_share = sum(unseen.values()) / len(current_labels)
    psi_figure = DriftFigure(
        LABEL_DRIFT_PSI,
        psi_method,
        reference=0.0,
        current=psi,
        statistic=psi,
        threshold=PSI_THRESHOLD,
        drifted=psi >= PSI_THRESHOLD and fit.p_value < P_VALUE_THRESHOLD,
        p_value=fit.p_value,
        details={
            "chi_square": _rounded(fit.statistic),
            "degrees_of_freedom": fit.degrees_of_freedom,
            "reference_shares": _share_map(reference_counts),
            "current_shares": _share_map(current_counts),
        },
    )
    unseen_figure = DriftFigure(
        UNSEEN_LABEL_SHARE,
        unseen_method,
        reference=0.0,
        current=unseen_share,
        statistic=unseen_share,
        threshold=0.0,
        drifted=unseen_share > 0,
        details={"unseen_labels": dict(sorted(unseen.items(), key=lambda item: -item[1]))},
    )
    return psi_figure, unseen_figure


# ---------------------------------------------------------------------------
# Embeddings: the domain classifier and the most drifted requests
# ---------------------------------------------------------------------------


def sample_rows(count: int, cap: int, seed: Sequence[int]) -> np.ndarray:
    """All of ``range(count)``, or a seeded draw of ``cap`` of them, ascending."""
    if count <= cap:
        return np.arange(count, dtype=np.int64)
    drawn = np.random.default_rng(list(seed)).choice(count, size=cap, replace=False)
    return np.sort(drawn).astype(np.int64)


def domain_classifier_auc(
    reference_vectors: np.ndarray, current_vectors: np.ndarray, *, seed: int = 0
) -> float | None:
    """Mean ROC AUC of a logistic regression telling current from reference embeddings over
    stratified folds, the larger side sampled down to the smaller (seeded). 0.5: they cannot
    be told apart. None below MIN_CLASSIFIER_PER_SIDE a side."""
    per_side = min(len(reference_vectors), len(current_vectors))
    if per_side < MIN_CLASSIFIER_PER_SIDE:
        return None
    reference_rows = sample_rows(len(reference_vectors), per_side, (seed, 2))
    current_rows = sample_rows(len(current_vectors), per_side, (seed, 3))
    features = np.vstack([reference_vectors[reference_rows], current_vectors[current_rows]])
    is_current = np.repeat([0, 1], per_side)
    folds = StratifiedKFold(
        n_splits=min(CLASSIFIER_FOLDS, per_side), shuffle=True, random_state=seed
    )
    scores = cross_val_score(
        LogisticRegression(max_iter=1000), features, is_current, cv=folds, scoring="roc_auc"
    )
    return float(np.mean(scores))


def embedding_figure(auc: float | None, per_side: int) -> DriftFigure:
    method = (
        "ROC AUC of a domain classifier (logistic regression on sentence embeddings, "
        f"{CLASSIFIER_FOLDS}-fold cross-validated) telling current from reference requests"
    )
    if auc is None:
        note = f"needs {MIN_CLASSIFIER_PER_SIDE} embedded requests on each side"
        return _not_computed(EMBEDDING_DRIFT_AUC, method, AUC_THRESHOLD, note)
    return DriftFigure(
        EMBEDDING_DRIFT_AUC,
        method,
        reference=0.5,
        current=auc,
        statistic=auc,
        threshold=AUC_THRESHOLD,
        drifted=auc > AUC_THRESHOLD,
        details={"requests_per_side": per_side},
    )


def nearest_reference_similarity(
    current_vectors: np.ndarray,
    reference_vectors: np.ndarray,
    *,
    chunk_rows: int = SIMILARITY_CHUNK_ROWS,
) -> np.ndarray:
    """For each current unit vector, its largest cosine similarity to any reference vector,
    a chunk of current rows at a time so no full current x reference matrix is ever held."""
    if not len(reference_vectors):
        return np.full(len(current_vectors), np.nan, dtype=np.float32)
    nearest = np.empty(len(current_vectors), dtype=np.float32)
    reference_t = np.ascontiguousarray(reference_vectors.T)
    for start in range(0, len(current_vectors), chunk_rows):
        block = current_vectors[start : start + chunk_rows] @ reference_t
        nearest[start : start + len(block)] = block.max(axis=1)
    return nearest


def most_drifted(
    current_vectors: np.ndarray,
    reference_vectors: np.ndarray,
    *,
    k: int = DEFAULT_MOST_DRIFTED,
    indices: np.ndarray | None = None,
) -> list[DriftedExample]:
    """The ``k`` current rows least similar to the whole reference, least similar first;
    ``indices`` maps rows to the caller's numbering (the embedded sample's rows)."""
    if not len(current_vectors) or not len(reference_vectors) or k < 1:
        return []
    nearest = nearest_reference_similarity(current_vectors, reference_vectors)
    take = min(k, len(nearest))
    candidates = np.argpartition(nearest, take - 1)[:take]
    # Ties broken by row, so the same data always ranks the same way.
    ranked = candidates[np.lexsort((candidates, nearest[candidates]))]
    numbering = np.arange(len(nearest)) if indices is None else indices
    return [DriftedExample(int(numbering[row]), float(nearest[row])) for row in ranked]


def embed_reference(
    texts: Sequence[str],
    *,
    embedder: TextEmbedder,
    cap: int = DEFAULT_EMBEDDING_CAP,
    seed: int = 0,
) -> ReferenceEmbeddings:
    """The reference's embedded sample, to cache and pass back to :func:`drift_figures`."""
    rows = sample_rows(len(texts), cap, (seed, 4))
    vectors = embedder.embed([texts[row] for row in rows])
    return ReferenceEmbeddings(rows=rows, vectors=vectors, fingerprint=embedder.fingerprint)


def _usable(
    cached: ReferenceEmbeddings | None, reference_count: int, embedder: TextEmbedder
) -> bool:
    """A cached sample made by this embedder over a reference at least as long as its rows."""
    if cached is None or cached.fingerprint != embedder.fingerprint:
        return False
    in_range = not len(cached.rows) or int(cached.rows.max()) < reference_count
    return in_range and len(cached.rows) == len(cached.vectors)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


class _Stopwatch:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = work()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        return result


def drift_figures(
    reference: DriftSample,
    current: DriftSample,
    *,
    seed: int = 0,
    embedder: TextEmbedder | None = None,
    reference_embeddings: ReferenceEmbeddings | None = None,
    embedding_cap: int = DEFAULT_EMBEDDING_CAP,
    most_drifted_count: int = DEFAULT_MOST_DRIFTED,
) -> DriftResult:
    """Every drift figure of ``current`` against ``reference``. Descriptors cover every text;
    the embedding stage a seeded sample of at most ``embedding_cap`` texts a side, and the
    most drifted requests are drawn from the current side's sample. ``reference_embeddings``
    (from an earlier result, cached) skips embedding the reference when the embedder that made
    them is the one given; the result carries the ones it used, for the caller to cache.
    Label figures are reported when both samples carry labels. ``embedder`` defaults to the
    process's all-MiniLM-L6-v2 (``monitoring.embedding.sentence_embedder``)."""
    started = time.perf_counter()
    watch = _Stopwatch()
    figures = watch.run("descriptors", lambda: _descriptor_figures(reference, current, seed))
    figures.extend(watch.run("labels", lambda: _label_figures(reference, current)))
    embedded = _embedding_stage(
        reference,
        current,
        watch,
        embedder=embedder or _default_embedder(),
        cached=reference_embeddings,
        cap=embedding_cap,
        most_drifted_count=most_drifted_count,
        seed=seed,
    )
    watch.seconds["total"] = time.perf_counter() - started
    return DriftResult(
        figures=[embedded.figure, *figures],
        most_drifted=embedded.most_drifted,
        n_reference=len(reference.texts),
        n_current=len(current.texts),
        n_reference_embedded=embedded.n_reference,
        n_current_embedded=embedded.n_current,
        seconds=watch.seconds,
        reference_embeddings=embedded.reference_embeddings,
    )


@dataclass(frozen=True)
class _EmbeddingStage:
    figure: DriftFigure
    most_drifted: list[DriftedExample]
    reference_embeddings: ReferenceEmbeddings | None
    n_reference: int
    n_current: int


def _embedding_stage(
    reference: DriftSample,
    current: DriftSample,
    watch: _Stopwatch,
    *,
    embedder: TextEmbedder,
    cached: ReferenceEmbeddings | None,
    cap: int,
    most_drifted_count: int,
    seed: int,
) -> _EmbeddingStage:
    """The domain classifier and the most drifted requests, over the embedded samples."""
    embeddings = cached
    if not reference.texts:
        embeddings = None
    elif not _usable(cached, len(reference.texts), embedder):
        embeddings = watch.run(
            "embed_reference",
            lambda: embed_reference(reference.texts, embedder=embedder, cap=cap, seed=seed),
        )
    current_rows = sample_rows(len(current.texts), cap, (seed, 5))
    current_vectors = watch.run(
        "embed_current", lambda: _embed(embedder, [current.texts[row] for row in current_rows])
    )
    reference_vectors = embeddings.vectors if embeddings is not None else current_vectors[:0]
    auc = watch.run(
        "classifier", lambda: domain_classifier_auc(reference_vectors, current_vectors, seed=seed)
    )
    examples = watch.run(
        "most_drifted",
        lambda: most_drifted(
            current_vectors, reference_vectors, k=most_drifted_count, indices=current_rows
        ),
    )
    return _EmbeddingStage(
        figure=embedding_figure(auc, min(len(reference_vectors), len(current_vectors))),
        most_drifted=examples,
        reference_embeddings=embeddings,
        n_reference=len(reference_vectors),
        n_current=len(current_vectors),
    )


def _default_embedder() -> TextEmbedder:
    # Deferred: torch and transformers load only when a report needs embeddings.
    from monitoring.embedding import sentence_embedder

    return sentence_embedder()


def _label_figures(reference: DriftSample, current: DriftSample) -> list[DriftFigure]:
    if reference.labels is None or current.labels is None:
        return []
    return list(label_drift(reference.labels, current.labels))


def _descriptor_figures(
    reference: DriftSample, current: DriftSample, seed: int
) -> list[DriftFigure]:
    vocabulary = training_vocabulary(reference.texts)
    reference_columns = descriptor_columns(reference.texts)
    current_columns = descriptor_columns(current.texts, vocabulary)
    return [
        length_figure(reference_columns.chars, current_columns.chars),
        oov_figure(reference_oov_share(reference.texts, seed=seed), current_columns.oov_share),
        pii_figure(reference_columns.has_pii, current_columns.has_pii),
        language_figure(reference_columns.languages, current_columns.languages),
    ]


def _embed(embedder: TextEmbedder, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return embedder.embed(texts)


def _share_map(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: round(count / total, 6) for name, count in counts.most_common()}


def _missing_side_note(what: str = "requests") -> str:
    return f"needs {what} on both sides"


def _rounded(value: float) -> float:
    return round(value, 6)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None
