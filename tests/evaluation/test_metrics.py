import pytest

from evaluation.metrics import exact_match, token_f1


def test_exact_match_ignores_whitespace_only():
    assert exact_match(' {"a": 1}\n', '{"a":  1}')
    assert not exact_match('{"a": 2}', '{"a": 1}')
    assert not exact_match("Billing", "billing")


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
