"""Plain scoring functions for one answer or a list of answers.

Every score in [0, 1] is a fraction (1 = perfect), so differences read as points after x 100.
Nothing here touches Django or the database: callers pass strings and numbers, get numbers back.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from statistics import fmean
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)

# ---------------------------------------------------------------------------
# Text answers
# ---------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: the unit of token F1, ROUGE-L and length."""
    return _TOKEN.findall(text.lower())


def _is_edge_noise(char: str) -> bool:
    # Unicode punctuation (P*) covers ASCII and typographic quotes, brackets and full stops;
    # the backtick is a modifier symbol (Sk) but models wrap answers in it like a quote.
    return char.isspace() or char == "`" or unicodedata.category(char).startswith("P")


def normalise_answer(text: str) -> str:
    """The canonical form used by :func:`exact_match_normalised`.

    Unicode NFKC (so full-width letters and ligatures read as their plain forms), case-folded,
    whitespace collapsed to single spaces, and punctuation, quotes and backticks stripped from
    both ends. Punctuation inside the answer is kept: ``"U.S."`` becomes ``u.s``.
    """
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(folded)
    while start < end and _is_edge_noise(folded[start]):
        start += 1
    while end > start and _is_edge_noise(folded[end - 1]):
        end -= 1
    return folded[start:end]


def exact_match_normalised(prediction: str, reference: str) -> bool:
    """Lenient exact match for short answers: equal after :func:`normalise_answer`.

    ``'"Paris."'`` matches ``paris``; ``"Paris is"`` does not.
    """
    return normalise_answer(prediction) == normalise_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: harmonic mean of precision and recall of the shared token multiset."""
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def _longest_common_subsequence(first: Sequence[str], second: Sequence[str]) -> int:
    # Classic dynamic programme, keeping one row so memory is O(len(second)).
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for j, other in enumerate(second, start=1):
            if item == other:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: how much of the reference appears, in order, in the prediction.

    LCS = length of the longest common subsequence of the two token lists (same tokens as
    :func:`token_f1`); precision = LCS / prediction tokens, recall = LCS / reference tokens,
    score = their harmonic mean (beta = 1). Two empty answers score 1, one empty answer 0.
    """
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = _longest_common_subsequence(predicted, expected)
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _character_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(prediction: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    """chrF: character n-gram F-score (Popović 2015), in [0, 1].

    Whitespace is removed, then for each order 1..n the clipped n-gram overlap gives a
    precision (over the prediction's n-grams) and a recall (over the reference's). Precision and
    recall are each averaged over the orders that both strings are long enough to have, so a
    three-letter answer is not punished for having no 4-grams; the averages are combined as
    F-beta. beta = 2 weights recall twice as much as precision, so the score is not symmetric.
    Two empty answers score 1, one empty answer 0.
    """
    if n < 1:
        raise ValueError(f"chrF needs n >= 1, got {n}")
    hypothesis = "".join(prediction.split())
    target = "".join(reference.split())
    if not hypothesis or not target:
        return float(hypothesis == target)
    precisions: list[float] = []
    recalls: list[float] = []
    for order in range(1, n + 1):
        predicted, expected = _character_ngrams(hypothesis, order), _character_ngrams(target, order)
        if not predicted or not expected:
            break  # the shorter string has no n-grams of this order or any higher one
        overlap = sum((predicted & expected).values())
        precisions.append(overlap / sum(predicted.values()))
        recalls.append(overlap / sum(expected.values()))
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    if precision == 0 and recall == 0:
        return 0.0
    beta_squared = beta * beta
    return (1 + beta_squared) * precision * recall / (beta_squared * precision + recall)


# ---------------------------------------------------------------------------
# JSON answers
# ---------------------------------------------------------------------------

# A whole answer wrapped in one Markdown code fence, optionally tagged ``json``.
_FENCE = re.compile(r"\A\s*```[ \t]*(?:json)?[ \t]*\n(?P<body>.*?)\n?[ \t]*```\s*\Z", re.S | re.I)


def parse_json_answer(text: str, *, allow_fence: bool = True) -> Any | None:
    """The JSON object or array in ``text``, or None when there is none.

    Chat models often wrap JSON in a Markdown fence (three backticks, optionally tagged json);
    with ``allow_fence`` (the default) a single fence around the whole answer is
    unwrapped first, because the content, not the wrapper, is what a caller would parse. Bare
    scalars (``"yes"``, ``3``) are not counted as JSON answers.
    """
    candidate = text
    if allow_fence:
        fenced = _FENCE.match(text)
        if fenced:
            candidate = fenced.group("body")
    try:
        value = json.loads(candidate)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def json_valid(text: str, *, allow_fence: bool = True) -> bool:
    """Whether the answer is a JSON object or array (see :func:`parse_json_answer` on fences)."""
    return parse_json_answer(text, allow_fence=allow_fence) is not None


def flatten_json(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf fields of a JSON object keyed by dotted path: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Only objects are descended into; a list is one field whose value is the whole list, because
    the order and length of a list are part of the answer. An empty nested object is a leaf.
    """
    fields: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            fields.update(flatten_json(item, prefix=f"{path}."))
        else:
            fields[path] = item
    return fields


def _same_json_value(predicted: Any, expected: Any) -> bool:
    # Python says True == 1 and 1 == 1.0; JSON agrees on the numbers but not on the booleans.
    if isinstance(predicted, bool) or isinstance(expected, bool):
        return type(predicted) is type(expected) and predicted == expected
    if isinstance(predicted, int | float) and isinstance(expected, int | float):
        return predicted == expected
    if isinstance(predicted, list) and isinstance(expected, list):
        return len(predicted) == len(expected) and all(
            _same_json_value(p, e) for p, e in zip(predicted, expected, strict=True)
        )
    if isinstance(predicted, dict) and isinstance(expected, dict):
        return predicted.keys() == expected.keys() and all(
            _same_json_value(predicted[key], expected[key]) for key in expected
        )
    return type(predicted) is type(expected) and predicted == expected


_MISSING = object()


def json_field_results(prediction: str, reference: str) -> dict[str, bool] | None:
    """Per-field verdicts: for every leaf field of the reference object, does the prediction match?

    None when the reference is not a JSON object or has no fields (nothing to check). When the
    prediction is not a JSON object every field is False. Extra fields in the prediction are
    ignored: this measures whether the expected information is there.
    """
    expected = parse_json_answer(reference)
    if not isinstance(expected, dict):
        return None
    expected_fields = flatten_json(expected)
    if not expected_fields:
        return None
    predicted = parse_json_answer(prediction)
    predicted_fields = flatten_json(predicted) if isinstance(predicted, dict) else {}
    return {
        path: _same_json_value(predicted_fields.get(path, _MISSING), value)
        for path, value in expected_fields.items()
    }


def json_field_accuracy(prediction: str, reference: str) -> float | None:
    """Fraction of the reference object's leaf fields that the prediction gets exactly right.

    0 when the prediction is not valid JSON; None when the reference is not a JSON object.
    Use :func:`json_field_results` for the per-field breakdown.
    """
    results = json_field_results(prediction, reference)
    if results is None:
        return None
    return sum(results.values()) / len(results)


# ---------------------------------------------------------------------------
# Label answers (classification)
# ---------------------------------------------------------------------------

# The answered-column of the confusion matrix for answers that are none of the labels.
INVALID_LABEL = "(invalid)"


def labels_left_out(
    references: Sequence[str], *, max_labels: int, max_label_characters: int
) -> str | None:
    """Why expected answers without a label-set contract are not read as labels, in words; None
    when they are.

    They are labels when every one is a non-empty single line of at most
    ``max_label_characters`` (after trimming), there are at most ``max_labels`` distinct ones,
    and they repeat: at most half as many distinct values as references (two references may
    use two labels), which tells classification apart from short-answer QA. Distinct values are
    counted as exact match compares answers (:func:`normalise_answer`). The limits are the
    label-set contract's, so whatever a contract could declare is read as labels here too.
    """
    if not references:
        return "there are no expected answers"
    trimmed = [reference.strip() for reference in references]
    empty = sum(not label for label in trimmed)
    if empty:
        return f"{empty} expected answer(s) are empty"
    if any("\n" in label for label in trimmed):
        return "an expected answer spans several lines"
    longest = max(len(label) for label in trimmed)
    if longest > max_label_characters:
        return (
            f"an expected answer has {longest} characters, over the {max_label_characters} "
            "a label may have"
        )
    distinct = len({normalise_answer(label) for label in trimmed})
    if distinct > max_labels:
        return (
            f"the expected answers have {distinct} distinct values, over the {max_labels} "
            "labels a label set may have"
        )
    most = max(2, len(trimmed) // 2)
    if distinct > most:
        return (
            f"the expected answers have {distinct} distinct values among {len(trimmed)} "
            f"items: labels repeat, and these mostly do not (at most {most} would)"
        )
    return None


def _check_paired(
    first: Sequence[Any],
    second: Sequence[Any],
    names: tuple[str, str] = ("predictions", "references"),
) -> None:
    if len(first) != len(second):
        raise ValueError(
            f"need equally many {names[0]} and {names[1]}, "
            f"got {len(first)} {names[0]} and {len(second)} {names[1]}"
        )
    if not first:
        raise ValueError(f"no {names[0]} to score")


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of examples whose predicted label equals the reference label exactly.

    Labels are compared as given; normalise them first (e.g. :func:`normalise_answer`) if
    ``"Billing"`` and ``billing`` should count as the same label.
    """
    _check_paired(predictions, references)
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


@dataclass(frozen=True)
class LabelScores:
    """One label's scores. ``precision`` is None when nothing was answered with the label,
    ``recall`` None when no item expected it; F1 is then 0 (it has no true positive)."""

    label: str
    precision: float | None
    recall: float | None
    f1: float
    support: int  # items whose expected label it is
    answered: int  # items answered with it


def label_scores(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[LabelScores]:
    """Precision, recall, F1 and support of each label from a confusion matrix: row i is the
    items expected as ``labels[i]``, column j < len(labels) the items answered ``labels[j]``;
    any further column (answers that are no label) counts against the row's recall only."""
    count = len(labels)
    if len(matrix) != count or any(len(row) < count for row in matrix):
        raise ValueError(f"a confusion matrix of {count} labels needs {count} rows of {count}+")
    answered_as = [sum(row[j] for row in matrix) for j in range(count)]
    scores = []
    for i, label in enumerate(labels):
        hits, support, answered = matrix[i][i], sum(matrix[i]), answered_as[i]
        scores.append(
            LabelScores(
                label=label,
                precision=hits / answered if answered else None,
                recall=hits / support if support else None,
                # F1 = 2TP / (2TP + FP + FN) = 2TP / (answered + support): the harmonic mean
                # of precision and recall, and 0 without a true positive.
                f1=2 * hits / (answered + support) if answered + support else 0.0,
                support=support,
                answered=answered,
            )
        )
    return scores


@dataclass(frozen=True)
class LabelReport:
    """Label metrics of one candidate's answers.

    ``labels`` are the rows of ``matrix`` and its first columns; ``matrix[i][j]`` counts the
    items expected as ``labels[i]`` and answered ``labels[j]``, and the last column
    (``matrix[i][len(labels)]``, :data:`INVALID_LABEL`) those answered with something that is
    no label. ``macro_f1`` is the unweighted mean of ``per_label`` F1 over ``labels``.
    """

    labels: list[str]
    matrix: list[list[int]]
    accuracy: float
    macro_f1: float
    invalid: int
    per_label: list[LabelScores]

    @property
    def items(self) -> int:
        return sum(sum(row) for row in self.matrix)

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.items


def label_report(
    answered: Sequence[str | None], expected: Sequence[str], *, order: Sequence[str] = ()
) -> LabelReport:
    """Accuracy, macro-F1, per-label scores, invalid answers and the confusion matrix.

    ``answered[i]`` is the label item i was answered with, or None when the answer is no label
    (invalid: its own outcome, the matrix's last column); ``expected[i]`` is its expected label.

    Macro-F1 averages over the labels that occur among the expected labels or the answered
    ones, the usual definition (scikit-learn's macro average over the labels present): a label
    of the set that nobody expected and nobody answered has no F1 to speak of and is left out.
    An invalid answer is a miss for its expected label (lower recall) and a false positive for
    no label, so a model that invents labels loses recall rather than gaining a label that
    scores 0. Accuracy counts an invalid answer as wrong.

    The labels are ordered as in ``order`` (the contract's order), any others after them in
    sorted order.
    """
    _check_paired(answered, expected, ("answers", "expected labels"))
    present = set(expected) | {label for label in answered if label is not None}
    rank = {label: position for position, label in enumerate(order)}
    labels = sorted(present, key=lambda label: (rank.get(label, len(rank)), label))
    index = {label: position for position, label in enumerate(labels)}
    invalid_column = len(labels)
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for answer, truth in zip(answered, expected, strict=True):
        matrix[index[truth]][invalid_column if answer is None else index[answer]] += 1
    per_label = label_scores(labels, matrix)
    hits = sum(matrix[i][i] for i in range(len(labels)))
    return LabelReport(
        labels=labels,
        matrix=matrix,
        accuracy=hits / len(expected),
        macro_f1=sum(scores.f1 for scores in per_label) / len(per_label),
        invalid=sum(row[invalid_column] for row in matrix),
        per_label=per_label,
    )


# ---------------------------------------------------------------------------
# Confidence: abstention and calibration
# ---------------------------------------------------------------------------

CALIBRATION_BINS = 10
# Probabilities summed in floating point may stray this far outside [0, 1].
_PROBABILITY_SLACK = 1e-6


def _probabilities(confidences: Sequence[float]) -> list[float]:
    for value in confidences:
        if not -_PROBABILITY_SLACK <= value <= 1 + _PROBABILITY_SLACK:
            raise ValueError(f"a confidence is a probability in [0, 1], got {value}")
    return [min(1.0, max(0.0, value)) for value in confidences]


@dataclass(frozen=True)
class Abstention:
    """Answers whose confidence is below ``threshold`` abstain; the rest are answered.
    ``accuracy_answered`` is None when every answer abstained."""

    threshold: float | None
    answered: int
    abstained: int
    accuracy_answered: float | None


def abstention(
    confidences: Sequence[float], correct: Sequence[bool], *, threshold: float | None
) -> Abstention:
    """How many answers abstain below ``threshold`` (None: none do) and how often the others
    are right."""
    _check_paired(confidences, correct, ("confidences", "outcomes"))
    kept = [
        right
        for confidence, right in zip(_probabilities(confidences), correct, strict=True)
        if threshold is None or confidence >= threshold
    ]
    return Abstention(
        threshold=threshold,
        answered=len(kept),
        abstained=len(correct) - len(kept),
        accuracy_answered=sum(kept) / len(kept) if kept else None,
    )


@dataclass(frozen=True)
class CalibrationBin:
    """Answers whose confidence lies in [low, high) (the last bin includes 1): how many,
    their mean confidence and how many of them were right (None for an empty bin)."""

    low: float
    high: float
    count: int
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    expected_error: float
    bins: list[CalibrationBin]


def calibration(
    confidences: Sequence[float], correct: Sequence[bool], *, bins: int = CALIBRATION_BINS
) -> Calibration:
    """Expected calibration error over ``bins`` equal-width confidence bins (Naeini et al.
    2015; Guo et al. 2017), and the bins a reliability chart draws.

    ECE = sum over bins of (answers in the bin / all answers) x |accuracy in the bin - mean
    confidence in the bin|: 0 when the model is right exactly as often as it says, up to 1.
    ``confidences[i]`` is the probability the model gave answer i, ``correct[i]`` whether it
    was right.
    """
    _check_paired(confidences, correct, ("confidences", "outcomes"))
    if bins < 1:
        raise ValueError(f"calibration needs at least one bin, got {bins}")
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, right in zip(_probabilities(confidences), correct, strict=True):
        members[min(int(confidence * bins), bins - 1)].append((confidence, right))
    error = 0.0
    table = []
    for position, inside in enumerate(members):
        mean_confidence = fmean(c for c, _ in inside) if inside else None
        hit_rate = fmean(r for _, r in inside) if inside else None
        if mean_confidence is not None and hit_rate is not None:
            error += len(inside) / len(correct) * abs(hit_rate - mean_confidence)
        table.append(
            CalibrationBin(
                low=position / bins,
                high=(position + 1) / bins,
                count=len(inside),
                confidence=mean_confidence,
                accuracy=hit_rate,
            )
        )
    return Calibration(expected_error=error, bins=table)


# ---------------------------------------------------------------------------
# Checks and sizes
# ---------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}")


def regex_match(prediction: str, pattern: str) -> bool:
    """Whether ``pattern`` (Python ``re`` syntax) matches anywhere in the prediction.

    Anchor with ``^...$`` (or ``\\A...\\Z``) to require the whole answer to match. An invalid
    pattern raises ValueError naming the pattern.
    """
    return _compiled(pattern).search(prediction) is not None


def contains(prediction: str, needle: str, case_sensitive: bool = False) -> bool:
    """Whether ``needle`` appears in the prediction; case-folded unless ``case_sensitive``.

    An empty needle raises ValueError: every answer would pass, which is a misconfigured check.
    """
    if not needle:
        raise ValueError("contains check needs a non-empty needle")
    if case_sensitive:
        return needle in prediction
    return needle.casefold() in prediction.casefold()


@dataclass(frozen=True)
class AnswerLength:
    tokens: int
    characters: int


def answer_length(text: str) -> AnswerLength:
    """Length of an answer in :func:`tokens` and in characters (code points, ends trimmed)."""
    return AnswerLength(tokens=len(tokens(text)), characters=len(text.strip()))


# ---------------------------------------------------------------------------
# Latency and cost
# ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks.

    Same definition as numpy's default: position (n - 1) * q / 100 in the sorted values.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


@dataclass(frozen=True)
class LatencySummary:
    p50: float
    p95: float
    mean: float
    count: int


def latency_summary(seconds: Sequence[float]) -> LatencySummary:
    """Median, 95th percentile and mean of request latencies in seconds."""
    if not seconds:
        raise ValueError("no latencies to summarise")
    return LatencySummary(
        p50=percentile(seconds, 50),
        p95=percentile(seconds, 95),
        mean=sum(seconds) / len(seconds),
        count=len(seconds),
    )


def _as_decimal(value: Decimal | int | float | str) -> Decimal:
    # str() first so a float price such as 0.15 becomes Decimal("0.15"), not its binary expansion.
    return value if isinstance(value, Decimal) else Decimal(str(value))


def cost_per_1000_requests(
    prompt_tokens: Sequence[int],
    completion_tokens: Sequence[int],
    usd_per_million_input: Decimal | int | float | str,
    usd_per_million_output: Decimal | int | float | str,
) -> Decimal:
    """US dollars for 1,000 requests like these: mean tokens per request x price, x 1,000.

    ``prompt_tokens[i]`` and ``completion_tokens[i]`` are the usage of request i. Exact decimal
    arithmetic, unrounded; round for display.
    """
    _check_paired(
        prompt_tokens, completion_tokens, ("prompt token counts", "completion token counts")
    )
    total = sum(prompt_tokens) * _as_decimal(usd_per_million_input) + sum(
        completion_tokens
    ) * _as_decimal(usd_per_million_output)
    # mean cost per request = total / (n x 1,000,000); x 1,000 requests.
    return total * 1000 / (len(prompt_tokens) * 1_000_000)
