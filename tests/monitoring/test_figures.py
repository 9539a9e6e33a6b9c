"""The production figures of an alias, from thousands of generated request log rows: what the
alias's traffic is (every name form the gateway accepts; not pinned names, other aliases,
other projects, shadows or refusals), the counts, rates and means, the latency percentiles
against numpy's, the answer contract on the most recent answers only, per-bucket series that
add up to the window, and a fixed number of queries whatever the traffic."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import BaseModel
from datasets.contracts import contract_violation
from ftportal.models import Project
from ftportal.roles import Role
from monitoring import figures
from monitoring.figures import (
    REQUEST_LOG_FIGURES,
    AliasTraffic,
    WindowFigures,
    alias_changes_between,
    bucket_starts,
    figure_series,
    percentile,
    window_figures,
)
from monitoring.models import Figure
from registry.models import AliasChangeKind, ModelVersion
from serving.model_names import alias_model_name, pinned_model_name, short_alias_model_name
from serving.models import FallbackRoute, RequestStatus
from tests.monitoring.traffic_builders import (
    ODD_TEXTS,
    Row,
    alias_change,
    alias_to,
    generated_rows,
    rows_store,
    served_version,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 3, 10, 12, 30, tzinfo=UTC)
SINCE = NOW - timedelta(hours=24)
LABELS = [ODD_TEXTS[1].strip(), ODD_TEXTS[4].strip()]
CONTRACT = {"kind": "label_set", "labels": LABELS}


@pytest.fixture
def odd_project(db: None) -> Project:
    # The syntax's own characters in the names: the gateway's names percent-encode them.
    return Project.objects.create(name="Ticket triage / EU @ 100%", description="odd names")


@pytest.fixture
def odd_lead(odd_project: Project, make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD, target=odd_project)


def encoded_whole(*parts: str) -> str:
    """A name with every part percent-encoded through and through, which the gateway also
    accepts (``serving.model_names``)."""
    return "/".join(quote(part, safe="") for part in parts)


def expected(rows: Iterable[Row], names: set[str], since: datetime, until: datetime) -> list[Row]:
    return [
        row
        for row in rows
        if row.counted and row.requested_model in names and since <= row.created_at < until
    ]


def assert_figures_match(found: WindowFigures, mine: list[Row]) -> None:
    answered = [row for row in mine if row.status in (RequestStatus.OK, RequestStatus.FALLBACK)]
    errors = sum(row.status == RequestStatus.ERROR for row in mine)
    fallbacks = sum(row.status == RequestStatus.FALLBACK for row in mine)
    scored = [row.feedback for row in mine if row.feedback is not None]
    assert found.requests == len(mine) > 0
    assert found.answered == len(answered)
    assert found.errors == errors
    assert found.fallbacks == fallbacks
    assert found.error_rate == pytest.approx(errors / len(mine))
    assert found.fallback_rate == pytest.approx(fallbacks / len(mine))
    assert found.cost_usd == sum((row.cost for row in mine if row.cost is not None), Decimal(0))
    assert found.unpriced == sum(row.cost is None for row in answered)
    assert found.feedback_count == len(scored)
    assert found.feedback_rate == pytest.approx(len(scored) / len(mine))
    assert found.feedback_score == pytest.approx(sum(scored) / len(scored))
    # A request with two events is one success.
    assert found.successes == sum(row.events > 0 for row in mine)
    assert found.success_rate == pytest.approx(found.successes / len(mine))
    p50, p95 = np.percentile([row.latency_ms for row in mine], [50, 95])
    assert found.latency_p50_ms == pytest.approx(p50)
    assert found.latency_p95_ms == pytest.approx(p95)


class World:
    def __init__(self, project: Project, lead: User, base_model: BaseModel) -> None:
        self.project = project
        self.lead = lead
        # Version 1 answers within a contract; version 2's dataset has none.
        self.v1 = served_version(
            project, lead, base_model, model_name="tri@ge/v", contract=CONTRACT
        )
        self.v2 = served_version(project, lead, base_model, model_name="tri@ge/v")
        self.model = self.v1.registered_model
        alias_to(self.v1)
        alias_to(self.v2, "staging")
        self.names = {
            alias_model_name(project, self.model, "production"),
            short_alias_model_name(project, "production"),
            encoded_whole(project.name, self.model.name, "production"),
            encoded_whole(project.name, "production"),
        }
        self.not_names = [
            pinned_model_name(self.v1),
            alias_model_name(project, self.model, "staging"),
            short_alias_model_name(project, "staging"),
            "Other project/production",
            "",
        ]


@pytest.fixture
def world(odd_project: Project, odd_lead: User, base_model: BaseModel) -> World:
    return World(odd_project, odd_lead, base_model)


@pytest.fixture
def traffic(world: World) -> list[Row]:
    rows = generated_rows(
        seed=17,
        count=6000,
        names=sorted(world.names) + world.not_names,
        start=NOW - timedelta(hours=48),
        span=timedelta(hours=48),
        version_ids=[world.v1.pk, world.v2.pk, None],
    )
    rows_store(world.project, rows)
    return rows


def test_a_window_counts_only_the_aliass_answered_and_failed_requests(
    world: World, traffic: list[Row]
) -> None:
    found = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)

    mine = expected(traffic, world.names, SINCE, NOW)
    assert len(mine) > 1000
    assert_figures_match(found, mine)
    # The pinned name, the other alias, shadows and refusals were all in the window too.
    in_window = [row for row in traffic if SINCE <= row.created_at < NOW]
    assert any(row.requested_model == pinned_model_name(world.v1) for row in in_window)
    assert any(row.shadow and row.requested_model in world.names for row in in_window)
    assert any(row.status == RequestStatus.REFUSED for row in in_window)
    assert found.requests < sum(row.requested_model in world.names for row in in_window)


def test_each_name_form_the_gateway_accepts_counts_and_nothing_else_does(
    world: World, traffic: list[Row]
) -> None:
    found = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)
    staging = window_figures(registered_model=world.model, alias="staging", since=SINCE, until=NOW)

    for name in world.names:
        assert any(row.requested_model == name for row in expected(traffic, {name}, SINCE, NOW))
    staging_names = {
        alias_model_name(world.project, world.model, "staging"),
        short_alias_model_name(world.project, "staging"),
    }
    assert staging.requests == len(expected(traffic, staging_names, SINCE, NOW)) > 0
    assert found.requests + staging.requests < len(
        [row for row in traffic if row.counted and SINCE <= row.created_at < NOW]
    )


def test_the_window_includes_its_start_and_leaves_out_its_end(world: World) -> None:
    name = alias_model_name(world.project, world.model, "production")
    at_start, at_end = (
        Row("req_at_start", name, SINCE, RequestStatus.OK, 10, "x", world.v1.pk),
        Row("req_at_end", name, NOW, RequestStatus.OK, 30, "x", world.v1.pk),
    )
    rows_store(world.project, [at_start, at_end])

    found = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)

    assert (found.requests, found.latency_p50_ms) == (1, 10)


def test_a_quiet_window_has_counts_of_zero_and_no_rates(world: World, traffic: list[Row]) -> None:
    long_ago = NOW - timedelta(days=30)

    found = window_figures(
        registered_model=world.model,
        alias="production",
        since=long_ago,
        until=long_ago + timedelta(hours=1),
    )

    assert found == WindowFigures()
    assert found.requests == 0 and found.cost_usd == 0
    assert found.error_rate is None and found.latency_p95_ms is None
    assert found.feedback_score is None and found.contract_validity is None
    assert all(found.figure(name) in (None, 0.0) for name in REQUEST_LOG_FIGURES)


def test_the_contract_is_checked_on_the_most_recent_answers_only(
    world: World, traffic: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "CONTRACT_SAMPLE", 300)

    found = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)

    answered = [
        row
        for row in expected(traffic, world.names, SINCE, NOW)
        if row.status in (RequestStatus.OK, RequestStatus.FALLBACK)
    ]
    newest = sorted(answered, key=lambda row: row.created_at, reverse=True)[:300]
    # Version 2's dataset has no contract; a base model's answer (a fallback) is held to the
    # alias's version's.
    checked = [row for row in newest if row.served_version_id in (world.v1.pk, None)]
    valid = [row for row in checked if contract_violation(CONTRACT, row.output) is None]
    assert 0 < len(valid) < len(checked) < 300 < len(answered)
    assert (found.contract_checked, found.contract_valid) == (len(checked), len(valid))
    assert found.contract_validity == pytest.approx(len(valid) / len(checked))


def test_without_a_contract_there_is_no_contract_figure(
    odd_project: Project, odd_lead: User, base_model: BaseModel
) -> None:
    version = served_version(odd_project, odd_lead, base_model)
    alias_to(version)
    name = alias_model_name(odd_project, version.registered_model, "production")
    rows_store(
        odd_project,
        [
            Row(f"req_{n}", name, NOW - timedelta(minutes=n + 1), "ok", 5, "x", version.pk)
            for n in range(5)
        ],
    )

    found = window_figures(
        registered_model=version.registered_model, alias="production", since=SINCE, until=NOW
    )

    assert found.requests == 5
    assert (found.contract_checked, found.contract_validity) == (0, None)


def test_a_short_name_two_models_share_counts_for_the_model_that_served_it(
    world: World, base_model: BaseModel
) -> None:
    other = served_version(world.project, world.lead, base_model, model_name="other")
    alias_to(other)  # now "<project>/production" names two aliases
    route = FallbackRoute.objects.create(
        alias=world.model.aliases.get(name="production"), fallback_base_model=base_model
    )
    short = short_alias_model_name(world.project, "production")
    other_long = alias_model_name(world.project, other.registered_model, "production")
    at = NOW - timedelta(minutes=5)
    rows = [
        Row("req_ours", short, at, RequestStatus.OK, 10, "x", world.v2.pk),
        Row(
            "req_our_route",
            short,
            at,
            RequestStatus.FALLBACK,
            20,
            "x",
            None,
            fallback_route_id=route.pk,
        ),
        Row("req_theirs", short, at, RequestStatus.OK, 30, "x", other.pk),
        Row("req_their_long", other_long, at, RequestStatus.ERROR, 40, "", other.pk),
    ]
    rows_store(world.project, rows)

    ours = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)
    theirs = window_figures(
        registered_model=other.registered_model, alias="production", since=SINCE, until=NOW
    )

    assert (ours.requests, ours.fallbacks, ours.latency_p50_ms) == (2, 1, 15)
    assert (theirs.requests, theirs.errors, theirs.latency_p50_ms) == (2, 1, 35)


def test_the_series_buckets_add_up_to_the_window(world: World, traffic: list[Row]) -> None:
    since = NOW - timedelta(hours=48)

    series = figure_series(
        registered_model=world.model, alias="production", since=since, until=NOW, bucket="hour"
    )
    whole = window_figures(registered_model=world.model, alias="production", since=since, until=NOW)

    starts = [start for start, _ in series]
    assert starts == bucket_starts(since, NOW, "hour")
    assert len(starts) == 49  # the hour cut at `since` and the one cut at `until` included
    assert starts[0] == datetime(2027, 3, 8, 12, tzinfo=UTC)
    assert sum(found.requests for _, found in series) == whole.requests
    assert sum(found.successes for _, found in series) == whole.successes
    assert sum((found.cost_usd for _, found in series), Decimal(0)) == whole.cost_usd
    for start, found in series:
        end = start + timedelta(hours=1)
        mine = expected(traffic, world.names, max(start, since), min(end, NOW))
        if mine:
            assert_figures_match(found, mine)
        else:
            assert found == WindowFigures()


def test_day_and_week_buckets_start_at_utc_midnight_and_monday(
    world: World, traffic: list[Row]
) -> None:
    days = figure_series(
        registered_model=world.model, alias="production", since=SINCE, until=NOW, bucket="day"
    )
    weeks = figure_series(
        registered_model=world.model,
        alias="production",
        since=NOW - timedelta(days=20),
        until=NOW,
        bucket="week",
    )

    assert [start for start, _ in days] == [
        datetime(2027, 3, 9, tzinfo=UTC),
        datetime(2027, 3, 10, tzinfo=UTC),
    ]
    assert all(start.weekday() == 0 and start.hour == 0 for start, _ in weeks)
    for start, found in days:
        mine = expected(
            traffic, world.names, max(start, SINCE), min(start + timedelta(days=1), NOW)
        )
        assert found.requests == len(mine)
    assert sum(found.requests for _, found in weeks) == len(
        expected(traffic, world.names, NOW - timedelta(days=20), NOW)
    )


def test_the_series_contract_sample_spreads_over_the_buckets(
    world: World, traffic: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "CONTRACT_SAMPLE", 10 * 48)
    since = NOW - timedelta(hours=48)

    series = figure_series(
        registered_model=world.model, alias="production", since=since, until=NOW, bucket="hour"
    )

    # At least CONTRACT_SAMPLE_PER_BUCKET_MIN (20) answers a bucket, the newest of each.
    checked = [found.contract_checked for _, found in series if found.answered]
    assert checked and all(0 < n <= 20 for n in checked)
    start, found = next((start, found) for start, found in series if found.answered >= 40)
    answered = [
        row
        for row in expected(traffic, world.names, start, start + timedelta(hours=1))
        if row.status in (RequestStatus.OK, RequestStatus.FALLBACK)
    ]
    newest = sorted(answered, key=lambda row: row.created_at, reverse=True)[:20]
    held = [row for row in newest if row.served_version_id in (world.v1.pk, None)]
    assert found.contract_checked == len(held)
    assert found.contract_valid == sum(
        contract_violation(CONTRACT, row.output) is None for row in held
    )


def test_a_window_costs_a_fixed_few_queries_whatever_the_traffic(
    world: World, traffic: list[Row]
) -> None:
    with CaptureQueriesContext(connection) as small:
        window_figures(
            registered_model=world.model,
            alias="production",
            since=NOW - timedelta(hours=1),
            until=NOW,
        )
    with CaptureQueriesContext(connection) as large:
        window_figures(
            registered_model=world.model,
            alias="production",
            since=NOW - timedelta(hours=48),
            until=NOW,
        )
    with CaptureQueriesContext(connection) as series:
        figure_series(
            registered_model=world.model,
            alias="production",
            since=NOW - timedelta(hours=48),
            until=NOW,
            bucket="hour",
        )

    assert len(small) == len(large) == len(series) <= 6


def test_figures_are_read_by_the_alert_rules_names() -> None:
    found = WindowFigures(requests=12, error_rate=0.25, cost_usd=Decimal("1.50"))

    assert set(REQUEST_LOG_FIGURES) <= set(Figure.values)
    assert found.figure(Figure.ERROR_RATE) == 0.25
    assert found.figure(Figure.REQUESTS) == 12.0
    assert found.figure(Figure.COST_USD) == 1.5
    assert found.figure(Figure.LATENCY_P95_MS) is None
    with pytest.raises(KeyError):
        found.figure(Figure.EMBEDDING_DRIFT_AUC)


@pytest.mark.parametrize("values", [[7.0], [1.0, 2.0], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]])
def test_the_percentile_without_postgres_is_numpys(values: list[float]) -> None:
    for fraction in (0.0, 0.5, 0.95, 1.0):
        assert percentile(sorted(values), fraction) == pytest.approx(
            np.percentile(values, fraction * 100)
        )
    assert percentile([], 0.5) is None


def test_the_aliass_promotions_and_rollbacks_in_the_range(
    world: World, base_model: BaseModel
) -> None:
    before = alias_change(world.v2, user=world.lead, at=SINCE - timedelta(hours=1))
    promoted = alias_change(
        world.v2, user=world.lead, at=NOW - timedelta(hours=3), from_version=world.v1
    )
    rolled_back = alias_change(
        world.v1,
        user=world.lead,
        at=NOW - timedelta(hours=2),
        kind=AliasChangeKind.ROLLBACK,
        from_version=world.v2,
    )
    alias_change(world.v2, user=world.lead, at=NOW - timedelta(hours=1), alias="staging")

    changes = alias_changes_between(
        registered_model=world.model, alias="production", since=SINCE, until=NOW
    )

    assert [change.pk for change in changes] == [promoted.pk, rolled_back.pk]
    assert before.pk not in [change.pk for change in changes]
    assert changes[1].to_version == world.v1 and changes[1].changed_by == world.lead


def test_versions_of_another_model_never_decide_a_long_names_count(world: World) -> None:
    # The long name is the alias's whatever served it (an experiment arm, a fallback version).
    name = alias_model_name(world.project, world.model, "production")
    rows_store(
        world.project, [Row("req_any", name, NOW - timedelta(minutes=1), "ok", 9, "x", None)]
    )

    found = window_figures(registered_model=world.model, alias="production", since=SINCE, until=NOW)

    assert found.requests == 1
    assert ModelVersion.objects.filter(registered_model=world.model).count() == 2


def test_a_name_is_read_as_the_gateway_reads_it() -> None:
    traffic = AliasTraffic(
        project_id=1,
        project_name="R&D / EU",
        model_name="tri@ge",
        alias="canary@eu",
        short_shared=False,
        version_ids=(),
        route_id=None,
        current_version_id=None,
    )

    assert traffic.form_of("R&D %2F EU/tri%40ge/canary%40eu") == "long"
    assert traffic.form_of("R%26D%20%2F%20EU/tri%40ge/canary%40eu") == "long"
    assert traffic.form_of("R&D %2F EU/canary%40eu") == "short"
    # A raw "@" in the last of two parts makes a pinned name, whatever it decodes to.
    assert traffic.form_of("R&D %2F EU/canary@eu") is None
    assert traffic.form_of("R&D %2F EU/tri%40ge@3") is None
    assert traffic.form_of("R&D / EU/tri%40ge/canary%40eu") is None  # a raw "/" splits
    assert traffic.form_of("R&D %2F EU/tri%40ge/canary%40eu/extra") is None
    assert traffic.form_of("r&d %2F eu/tri%40ge/canary%40eu") is None  # names are exact
