from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics import (
    AnswerLength,
    accuracy,
    answer_length,
    chrf,
    contains,
    cost_per_1000_requests,
    exact_match_normalised,
    flatten_json,
    json_field_accuracy,
    json_field_results,
    json_valid,
    latency_summary,
    normalise_answer,
    parse_json_answer,
    percentile,
    regex_match,
    rouge_l,
    token_f1,
)

# Property tests share two CPU cores with other work: keep them small.
few = settings(max_examples=60, deadline=None)
short_text = st.text(max_size=30)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("billing high", "billing high", 1.0),
        ("billing", "billing high", 2 * 1.0 * 0.5 / 1.5),
        ("bug", "billing", 0.0),
        ("", "", 1.0),
        ("", "billing", 0.0),
    ],
)
def test_token_f1_scores_overlap(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)


# --- exact match, normalised ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ('"Paris."', "paris"),
        ("  New   York ", "new york"),
        ("«Ｐａｒｉｓ»", "Paris"),  # full-width letters fold to ASCII under NFKC
        ("`42`", "42"),
        ("STRASSE", "straße"),  # casefold, not lower: ß folds to ss
        ("(B)", "b"),
        ("", "..."),  # nothing but punctuation normalises to the empty answer
    ],
)
def test_exact_match_normalised_forgives_case_quotes_and_edge_punctuation(prediction, reference):
    assert exact_match_normalised(prediction, reference)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("Paris, France", "paris"), ("U.S.", "US"), ("new-york", "new york"), ("1", "")],
)
def test_exact_match_normalised_keeps_inner_punctuation_and_words(prediction, reference):
    assert not exact_match_normalised(prediction, reference)


def test_normalise_answer_strips_only_the_ends():
    assert normalise_answer('  "U.S.A."  ') == "u.s.a"


def test_normalised_exact_match_forgives_case_and_edge_punctuation_only():
    assert exact_match_normalised("Paris.", "paris")
    assert not exact_match_normalised("Paris is", "paris")


@few
@given(short_text, short_text)
def test_answers_equal_up_to_whitespace_match_after_normalising(prediction, reference):
    if " ".join(prediction.split()) == " ".join(reference.split()):
        assert exact_match_normalised(prediction, reference)


# --- ROUGE-L --------------------------------------------------------------------------------


def test_rouge_l_worked_example():
    # prediction: police killed gunman        (3 tokens)
    # reference:  police killed the gunman    (4 tokens)
    # LCS = police killed gunman = 3 -> precision 3/3 = 1, recall 3/4
    # F1 = 2 * 1 * 0.75 / (1 + 0.75) = 1.5 / 1.75 = 6/7
    assert rouge_l("police killed gunman", "police killed the gunman") == pytest.approx(6 / 7)


def test_rouge_l_counts_order_unlike_token_f1():
    # Same four tokens, so token F1 = 1. Reordered: LCS of [the gunman kill police] and
    # [police kill the gunman] is "the gunman" = 2, so P = R = 2/4 and F1 = 0.5.
    assert token_f1("the gunman kill police", "police kill the gunman") == 1.0
    assert rouge_l("the gunman kill police", "police kill the gunman") == pytest.approx(0.5)


def test_rouge_l_with_repeated_tokens():
    # pred [the cat sat on the mat], ref [the cat lay on a mat]: LCS the-cat-on-mat = 4 of 6 each.
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("", "", 1.0),
        ("", "x", 0.0),
        ("x", "", 0.0),
        ("a b", "c d", 0.0),
        ("Ünïcode!", "ünïcode !", 1.0),
    ],
)
def test_rouge_l_edge_cases(prediction, reference, expected):
    assert rouge_l(prediction, reference) == expected


@few
@given(short_text, short_text)
def test_rouge_l_is_a_symmetric_fraction(prediction, reference):
    score = rouge_l(prediction, reference)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(rouge_l(reference, prediction))
    assert rouge_l(prediction, prediction) == 1.0
    # A common subsequence is a common multiset, never more: ROUGE-L <= token F1.
    assert score <= token_f1(prediction, reference) + 1e-12


# --- chrF -----------------------------------------------------------------------------------


def test_chrf_worked_example():
    # prediction "cat", reference "cats" (no whitespace to remove).
    # order 1: {c,a,t} vs {c,a,t,s}: overlap 3 -> P 3/3, R 3/4
    # order 2: {ca,at} vs {ca,at,ts}: overlap 2 -> P 2/2, R 2/3
    # order 3: {cat} vs {cat,ats}:     overlap 1 -> P 1/1, R 1/2
    # order 4+: "cat" has none, so the averages stop at order 3.
    # mean P = 1, mean R = (9/12 + 8/12 + 6/12) / 3 = 23/36
    # F2 = (1 + 4) P R / (4 P + R) = 5 * 23/36 / (4 + 23/36) = 115 / 167
    assert chrf("cat", "cats") == pytest.approx(115 / 167)


def test_chrf_weights_recall_over_precision():
    # Reversed roles: P and R swap, P = 23/36, R = 1 -> F2 = 5 * 23/36 / (4 * 23/36 + 1) = 115/128.
    assert chrf("cats", "cat") == pytest.approx(115 / 128)
    assert chrf("cats", "cat") > chrf("cat", "cats")


def test_chrf_ignores_whitespace_and_clips_repeats():
    assert chrf("new york", "newyork") == 1.0
    # "aaaa" vs "aa": order 1 overlap min(4, 2) = 2 -> P 2/4, R 1; order 2 overlap 1 -> P 1/3, R 1.
    # mean P = (1/2 + 1/3) / 2 = 5/12, mean R = 1 -> F2 = 5 * 5/12 / (4 * 5/12 + 1) = 25/32.
    assert chrf("aaaa", "aa") == pytest.approx(25 / 32)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("", "", 1.0),
        ("", "abc", 0.0),
        ("abc", "  ", 0.0),
        ("abc", "xyz", 0.0),
        ("日本語", "日本語", 1.0),
    ],
)
def test_chrf_edge_cases(prediction, reference, expected):
    assert chrf(prediction, reference) == expected


def test_chrf_rejects_order_zero():
    with pytest.raises(ValueError, match="n >= 1"):
        chrf("a", "a", n=0)


@few
@given(short_text, short_text)
def test_chrf_bounds_and_identity(prediction, reference):
    assert 0.0 <= chrf(prediction, reference) <= 1.0
    assert chrf(prediction, prediction) == 1.0


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('{"a": 1}', True),
        ("[1, 2]", True),
        ('```json\n{"a": 1}\n```', True),
        ('```\n{"a": 1}\n```', True),
        ("  ```JSON\n[1]```  ", True),
        ('{"a": 1', False),
        ('"just a string"', False),
        ("3", False),
        ("", False),
        ('Here you go: {"a": 1}', False),
    ],
)
def test_json_valid(text, valid):
    assert json_valid(text) is valid


def test_json_valid_can_refuse_fences():
    assert not json_valid('```json\n{"a": 1}\n```', allow_fence=False)
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}


def test_flatten_json_uses_dotted_paths_and_keeps_lists_whole():
    assert flatten_json({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }


def test_json_field_accuracy_worked_example():
    reference = '{"category": "billing", "priority": {"level": 2, "urgent": true}, "tags": ["a"]}'
    prediction = '{"category": "billing", "priority": {"level": 2.0, "urgent": 1}, "extra": 5}'
    # Fields: category right; priority.level right (2 == 2.0 in JSON); priority.urgent wrong
    # (1 is not true); tags missing. 2 of 4 -> 0.5. The extra field is ignored.
    assert json_field_results(prediction, reference) == {
        "category": True,
        "priority.level": True,
        "priority.urgent": False,
        "tags": False,
    }
    assert json_field_accuracy(prediction, reference) == 0.5


def test_json_field_accuracy_edge_cases():
    assert json_field_accuracy("not json", '{"a": 1}') == 0.0
    assert json_field_accuracy("[1]", '{"a": 1}') == 0.0
    assert json_field_accuracy('{"a": 1}', "[1]") is None
    assert json_field_accuracy('{"a": 1}', "plain text") is None
    assert json_field_accuracy("{}", "{}") is None
    assert (
        json_field_accuracy('```json\n{"a": [1, {"b": null}]}\n```', '{"a": [1, {"b": null}]}')
        == 1.0
    )
    assert json_field_accuracy('{"a": [2, 1]}', '{"a": [1, 2]}') == 0.0
    assert json_field_accuracy('{"a": "1"}', '{"a": 1}') == 0.0


# --- labels ---------------------------------------------------------------------------------


def test_accuracy_compares_labels_as_given():
    assert accuracy(["a", "b", "b", "d"], ["a", "a", "b", "c"]) == 0.5
    assert accuracy(["Billing"], ["billing"]) == 0.0
    with pytest.raises(ValueError, match="equally many"):
        accuracy(["a"], ["a", "b"])


# Macro-F1, per-label scores, the confusion matrix, invalid labels and when expected answers
# read as labels: tests/evaluation/test_label_metrics.py.


# --- checks and sizes -----------------------------------------------------------------------


def test_regex_match_searches_anywhere_unless_anchored():
    assert regex_match("Order #123 shipped", r"#\d+")
    assert not regex_match("Order #123 shipped", r"^#\d+$")
    assert regex_match("#123", r"^#\d+$")


def test_regex_match_names_a_bad_pattern():
    with pytest.raises(ValueError, match=r"invalid regular expression '\(unclosed'"):
        regex_match("text", "(unclosed")


def test_contains():
    assert contains("The answer is BILLING.", "billing")
    assert not contains("The answer is BILLING.", "billing", case_sensitive=True)
    assert contains("Straße", "STRASSE")
    with pytest.raises(ValueError, match="non-empty"):
        contains("anything", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world!", AnswerLength(tokens=4, characters=13)),  # hello , world !
        ("  padded  ", AnswerLength(tokens=1, characters=6)),
        ("", AnswerLength(tokens=0, characters=0)),
        ("naïve café", AnswerLength(tokens=2, characters=10)),
    ],
)
def test_answer_length(text, expected):
    assert answer_length(text) == expected


# --- latency and cost -----------------------------------------------------------------------


def test_percentile_interpolates_linearly():
    values = [4.0, 1.0, 3.0, 2.0]
    # sorted 1 2 3 4; p50 at position 3 * 0.5 = 1.5 -> 2 + 0.5 * (3 - 2) = 2.5
    assert percentile(values, 50) == 2.5
    # p95 at position 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0


def test_percentile_refuses_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@few
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
    st.floats(0, 100),
)
def test_percentile_agrees_with_numpy(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_latency_summary():
    summary = latency_summary([0.1 * i for i in range(1, 21)])  # 0.1 .. 2.0
    # p50 at position 19 * 0.5 = 9.5 -> 1.0 + 0.5 * 0.1 = 1.05; p95 at 18.05 -> 1.9 + 0.05 * 0.1
    assert summary.p50 == pytest.approx(1.05)
    assert summary.p95 == pytest.approx(1.905)
    assert summary.mean == pytest.approx(1.05)
    assert summary.count == 20
    with pytest.raises(ValueError):
        latency_summary([])


def test_cost_per_1000_requests_worked_example():
    # mean prompt 200 tokens, mean completion 50 tokens per request.
    # per request: 200 * 0.15 / 1e6 + 50 * 0.60 / 1e6 = 0.00003 + 0.00003 = 0.00006 USD
    # per 1,000 requests: 0.06 USD
    cost = cost_per_1000_requests([100, 300], [50, 50], Decimal("0.15"), Decimal("0.60"))
    assert cost == Decimal("0.06")
    assert isinstance(cost, Decimal)
    # Float prices go through str(), so 0.15 is exactly 0.15.
    assert cost_per_1000_requests([100, 300], [50, 50], 0.15, "0.6") == Decimal("0.06")
    assert cost_per_1000_requests([1], [0], 0, 0) == 0


def test_cost_refuses_mismatched_or_empty_usage():
    with pytest.raises(ValueError, match="equally many"):
        cost_per_1000_requests([1, 2], [1], 1, 1)
    with pytest.raises(ValueError):
        cost_per_1000_requests([], [], 1, 1)
