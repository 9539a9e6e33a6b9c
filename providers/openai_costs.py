"""OpenAI's organisation cost report (GET /organization/costs), read day by day: what the
provider billed the organisation each UTC day, for reconciling the ledger with it.

The report takes an organisation admin key, not the key that calls models. Its buckets are
one day wide (``bucket_width=1d``), each with the day's cost results (amounts in dollars);
the answer comes in pages (``limit`` buckets each, ``next_page`` the cursor to the next).

As in ``providers.openai_ft``, the SDK's own retries are off and its errors come back as
ProviderError (TransientProviderError for what may pass if tried later); the caller decides
what to do with them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import openai
from openai.types.admin.organization import UsageCostsResponse
from openai.types.admin.organization.usage_costs_response import (
    DataResultOrganizationCostsResult,
)

from providers.base import ProviderError
from providers.openai_ft import classify_error

# OpenAI answers at most 180 buckets a page (7 unless asked).
MAX_PAGE_BUCKETS = 180
# A runaway cursor (a server that always says has_more) stops here rather than looping.
MAX_PAGES = 100
SECONDS_PER_DAY = 86_400


def _unix(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())


def daily_costs(
    *,
    admin_key: str,
    base_url: str,
    first_day: dt.date,
    end_day: dt.date,
    timeout: float,
    page_buckets: int = MAX_PAGE_BUCKETS,
) -> dict[dt.date, Decimal]:
    """What the organisation was billed each UTC day from ``first_day`` up to, not including,
    ``end_day``, in dollars as the report states them (a day without costs is $0): every page
    read. ProviderError when the report cannot be read or states a currency other than
    dollars."""
    client = openai.OpenAI(
        admin_api_key=admin_key, base_url=base_url, timeout=timeout, max_retries=0
    )
    costs: dict[dt.date, Decimal] = {}
    page: str | None = None
    try:
        for _ in range(MAX_PAGES):
            answer = _page(client, first_day, end_day, page, page_buckets)
            for bucket in answer.data:
                day = dt.datetime.fromtimestamp(bucket.start_time, tz=dt.UTC).date()
                costs[day] = costs.get(day, Decimal(0)) + sum(
                    (_dollars(result) for result in bucket.results), Decimal(0)
                )
            if not answer.has_more or not answer.next_page:
                return costs
            page = answer.next_page
    finally:
        client.close()
    raise ProviderError(f"reading the cost report: still more after {MAX_PAGES} pages.")


def _page(
    client: openai.OpenAI,
    first_day: dt.date,
    end_day: dt.date,
    page: str | None,
    page_buckets: int,
) -> UsageCostsResponse:
    try:
        return client.admin.organization.usage.costs(
            start_time=_unix(first_day),
            end_time=_unix(end_day),
            bucket_width="1d",
            limit=max(1, min(page_buckets, MAX_PAGE_BUCKETS)),
            page=page or openai.omit,
        )
    except openai.OpenAIError as error:
        raise classify_error("reading the cost report", error) from error


def _dollars(result: object) -> Decimal:
    # Other result types belong to the usage reports, which share the answer's shape.
    if not isinstance(result, DataResultOrganizationCostsResult) or result.amount is None:
        return Decimal(0)
    currency = (result.amount.currency or "usd").lower()
    if currency != "usd":
        raise ProviderError(f"reading the cost report: an amount in {currency}, not usd.")
    # Through its text, so that 1.2 stays 1.2 rather than the float's binary neighbour.
    return Decimal(str(result.amount.value or 0))
