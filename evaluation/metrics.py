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

# A reference is label-like when it is one short line; a set of references are labels when
# they repeat (few distinct values), which tells classification apart from short-answer QA.
LABEL_MAX_CHARACTERS = 40
LABEL_MAX_DISTINCT = 20


def answers_are_labels(
    references: Sequence[str],
    *,
    max_characters: int = LABEL_MAX_CHARACTERS,
    max_distinct: int = LABEL_MAX_DISTINCT,
) -> bool:
    """Whether the expected answers look like class labels, so label metrics make sense.

    True when every reference is non-empty, on one line and at most ``max_characters`` long
    (after trimming), there are at most ``max_distinct`` distinct references, and labels repeat:
    at most half as many distinct values as references (two examples may use two labels).
    """
    trimmed = [reference.strip() for reference in references]
    if not trimmed:
        return False
    if any(not label or "\n" in label or len(label) > max_characters for label in trimmed):
        return False
    distinct = len(set(trimmed))
    return distinct <= max_distinct and distinct <= max(2, len(trimmed) // 2)


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
class ConfusionMatrix:
    """Counts of (reference, prediction) pairs: ``matrix[i][j]`` = reference ``labels[i]``
    predicted as ``labels[j]``. Rows are references, columns predictions."""

    labels: list[str]
    matrix: list[list[int]]


def confusion_matrix(predictions: Sequence[str], references: Sequence[str]) -> ConfusionMatrix:
    """Confusion matrix over the sorted union of reference and predicted labels."""
    _check_paired(predictions, references)
    labels = sorted(set(references) | set(predictions))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for predicted, expected in zip(predictions, references, strict=True):
        matrix[index[expected]][index[predicted]] += 1
    return ConfusionMatrix(labels=labels, matrix=matrix)


def per_label_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """F1 of each label in the union of references and predictions (0 when it is never right)."""
    table = confusion_matrix(predictions, references)
    scores: dict[str, float] = {}
    for i, label in enumerate(table.labels):
        true_positives = table.matrix[i][i]
        predicted_as_label = sum(row[i] for row in table.matrix)
        actually_label = sum(table.matrix[i])
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual); 0 when TP = 0.
        scores[label] = 2 * true_positives / (predicted_as_label + actually_label)
    return scores


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Unweighted mean of per-label F1, so rare labels count as much as common ones.

    Labels are the union of references and predictions. A label the model invents (never in
    the references) has F1 0 and is part of the average, so inventing labels lowers the score;
    a reference label the model never predicts also has F1 0.
    """
    scores = per_label_f1(predictions, references)
    return sum(scores.values()) / len(scores)


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
