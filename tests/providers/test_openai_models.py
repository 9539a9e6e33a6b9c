"""Reading a model's announced shutdown date (``providers.openai_models``) from whatever the
SDK hands over: the declared field, an undeclared one kept among ``model_extra`` (older SDKs),
a date-time or a Unix time; anything else reads as no date, and says so."""

from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace

import pytest
from openai.types import Model

from providers.openai_models import shutdown_date_of


def test_the_declared_field_and_an_undeclared_one_are_read_alike() -> None:
    declared = Model.model_validate(
        {
            "id": "m",
            "object": "model",
            "created": 0,
            "owned_by": "system",
            "shutdown_date": "2026-12-06",
        }
    )
    assert shutdown_date_of(declared) == dt.date(2026, 12, 6)
    # An SDK type that does not declare it keeps it among the extras only.
    older = SimpleNamespace(id="m", model_extra={"shutdown_date": "2026-12-06"})
    assert shutdown_date_of(older) == dt.date(2026, 12, 6)
    absent = Model.model_validate({"id": "m", "object": "model", "created": 0, "owned_by": "x"})
    assert shutdown_date_of(absent) is None
    assert shutdown_date_of(SimpleNamespace(id="m", model_extra=None)) is None


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2026-12-06T00:00:00Z", dt.date(2026, 12, 6)),
        (1_796_515_200, dt.date(2026, 12, 6)),  # 2026-12-06 00:00 UTC
        (None, None),
        ("", None),
    ],
)
def test_a_date_time_or_unix_time_gives_its_day(value: object, day: dt.date | None) -> None:
    assert shutdown_date_of(SimpleNamespace(id="m", shutdown_date=value)) == day


def test_a_value_that_is_no_date_reads_as_none_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="providers.openai_models"):
        assert shutdown_date_of(SimpleNamespace(id="m", shutdown_date="soon")) is None
        assert shutdown_date_of(SimpleNamespace(id="m", shutdown_date=True)) is None
    assert [r.getMessage() for r in caplog.records] == [
        "Model m: shutdown_date 'soon' is not a date; read as none.",
        "Model m: shutdown_date True is not a date; read as none.",
    ]
