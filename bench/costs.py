"""The managers' cost dashboard over a ledger of 5 million spends: every selector the page calls,
as it calls them, against the naive per-row aggregation and the plain GROUP BY over the ledger
rows in the same run, over generated rows in a throwaway Postgres database.

    python bench/costs.py [--rows 5000000] [--days 540] [--projects 20] [--production 8]
                          [--repeats 5]

Creates its own database next to DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/ftportal), migrates it, and generates ``--rows`` ledger rows
in Postgres itself (INSERT ... SELECT from generate_series, a million rows per statement), with
the ledger's secondary indexes dropped while it fills and built again afterwards, and foreign-key
checks off for the session (``session_replication_role = replica``: the versions and training
jobs the rows name are minimal rows whose data, base model and author are not; the dashboard
joins the versions, their registered model and project, never those). The rows, oldest first
(as an append-only ledger grows), evenly over ``--days`` up to now, each column drawn from its
own hash of the row number (``hashint8extended``):

- projects: ``--projects``, a few big ones (the share of the k-th of n falls as
  sqrt(k/n) - sqrt((k-1)/n): 22% for the first, 9% and 7% for the next, 2.5% for the last);
- kinds: serving 92% (the gateway's batches, 1,000 to 201,000 tokens at $0.15 to $10 per
  million), evaluation 4% (20,000 to 520,000 tokens), judging 3% (5,000 to 205,000 tokens at
  $2.50 to $15 per million), training 0.5% (10 minutes to 10 hours of compute at $0.80 to $4 an
  hour) and data preparation 0.5% (30 s to half an hour of compute): serving the bulk of the
  rows, the others fewer but larger;
- 5% unpriced (price and amount NULL, never $0), the rest priced as ``quantity x price /
  price_per`` to 8 places;
- 15 model versions a project (two registered models: versions 1-10 and 1-5, each version with
  its training job): a serving row names the project's first version 55% of the time, another
  35%, none 10% (a hosted base model); an evaluation or judging row one of its versions (none
  20% of the time: base models compared); a training row its version's training job, no
  version; a data preparation row neither. The first version of the ``--production`` largest
  projects is behind their ``production`` alias.

The daily sums the dashboard reads (``LedgerDay``) are built from the ledger rows by one INSERT
... SELECT ... GROUP BY, which is what the writer's per-row upserts add up to; the bench checks
their sums per kind against the ledger's (``sums_ok``). Then VACUUM ANALYZE. The request log,
the evaluations and the feedback stay empty: the production models' traffic and metric trends
are read, and cost an index probe each, but find nothing (bench/request_log.py times the log at
10 million rows); no production version has an evaluated alternative.

Timed (median of ``--repeats``, after one warming call of each, the order alternating between
repeats), for (a) every project over the page's default view, this month and the eleven before
it (``all_``), and (b) the largest project over last month (``one_``), each selector of
``costs.selectors`` as ``cost_dashboard`` calls it: ``spend_total``, ``spend_by_month_and_kind``,
``spend_by_project``, ``top_cost_drivers``, ``unpriced_spends``, ``production_versions``,
``production_model`` for every production version (``production``, all of them together, as
the page builds them) and ``metric_trend`` likewise (``trends``); and ``cost_dashboard`` whole
(``dashboard``, not counted in ``max_query_ms``, which is the largest of the selectors'
medians). The CSV export: its first 10,000 rows as the export view makes them
(``costs.views.ledger_csv_lines``, whose cursor streams within a transaction), as rows per
second.

Baselines in the same run, for the same three figures (the total, by month and kind, by project
and kind), checked to be equal (Decimal amounts, spend and unpriced counts; ``figures_ok``):
``naive``, every ledger row in view read through the ORM (``values_list(...).iterator()``) and
summed in Python, in one pass for the three; ``groupby``, the three as SQL GROUP BY over the
ledger rows, without the daily sums. ``speedup`` is naive_ms over the sum of the three
selectors' medians (``spend_total`` + ``spend_by_month_and_kind`` + ``spend_by_project``), and
``groupby_speedup`` groupby_ms over the same sum, both for the view (a). A selector over
LIMIT_MS (300 ms), and the slowest selector, has the plan of its slowest statement printed
(EXPLAIN ANALYZE; ``limit_ok`` says whether every selector kept to it). The last line is
key=value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

GENERATE_CHUNK_ROWS = 1_000_000
# What the issue asks of each of the dashboard's queries.
LIMIT_MS = 300.0
EXPORT_ROWS = 10_000
# Versions of each project: two registered models, of VERSIONS_FIRST_MODEL and the rest.
VERSIONS_PER_PROJECT = 15
VERSIONS_FIRST_MODEL = 10
NAIVE_CHUNK_ROWS = 10_000
ZERO = Decimal(0)

# One statement per chunk. ``h1``..``h7``: independent non-negative hashes of the row number;
# ``at`` runs from the oldest moment (row 1) to now (the last row).
GENERATE_SQL = """
INSERT INTO costs_ledgerentry (
    project_id, model_version_id, training_job_id, endpoint_id, kind, quantity, unit, price,
    price_per, price_source, amount, event, origin, occurred_at, recorded_at
)
SELECT
    (%(projects)s::bigint[])[1 + pidx],
    CASE WHEN kind IN ('serving', 'evaluation', 'judging') AND vidx >= 0
         THEN (%(versions)s::bigint[])[1 + pidx * %(per_project)s + vidx] END,
    CASE WHEN kind = 'training'
         THEN (%(jobs)s::bigint[])[1 + pidx * %(per_project)s + vidx] END,
    NULL, kind, quantity, unit, price, price_per,
    CASE WHEN price IS NULL THEN 'no price known for ' || model_name
         WHEN unit = 'tokens' THEN 'price table: ' || model_name
         ELSE 'FTPORTAL_LOCAL_USD_PER_HOUR on worker bench-' || mod(h7, 4) END,
    CASE WHEN price IS NOT NULL THEN round(quantity * price / price_per, 8) END,
    'bench:' || lpad(g::text, 10, '0'),
    CASE kind WHEN 'serving' THEN 'gateway batch of ' || model_name
              WHEN 'evaluation' THEN 'evaluation run ' || mod(h7, 100000)
              WHEN 'judging' THEN 'judge of evaluation run ' || mod(h7, 100000)
              WHEN 'training' THEN 'training job attempt ' || mod(h7, 5)
              ELSE 'dataset preparation ' || mod(h7, 100000) END,
    at, at
FROM (
    SELECT g, h7, pidx, kind, vidx, at, model_name,
           CASE WHEN kind IN ('training', 'data_preparation') THEN 'compute_seconds'
                ELSE 'tokens' END AS unit,
           CASE kind
               WHEN 'serving' THEN 1000 + mod(h5, 200000)
               WHEN 'evaluation' THEN 20000 + mod(h5, 500000)
               WHEN 'judging' THEN 5000 + mod(h5, 200000)
               WHEN 'training' THEN 600 + mod(h5, 36000) + mod(h6, 1000000) / 1000000.0
               ELSE 30 + mod(h5, 1800) + mod(h6, 1000000) / 1000000.0
           END::numeric(24, 6) AS quantity,
           CASE WHEN unpriced THEN NULL
                WHEN kind = 'judging' THEN (ARRAY[2.50, 3.00, 10.00, 15.00])[1 + tier]
                WHEN kind IN ('training', 'data_preparation')
                    THEN (ARRAY[0.80, 2.50, 3.20, 4.00])[1 + tier]
                ELSE (ARRAY[0.15, 0.60, 2.50, 10.00])[1 + tier]
           END::numeric(18, 8) AS price,
           CASE WHEN kind IN ('training', 'data_preparation') THEN 3600
                ELSE 1000000 END::numeric(12, 0) AS price_per
    FROM (
        SELECT g, h5, h6, h7, pidx, kind, unpriced, tier, at,
               (ARRAY['gpt-4o-mini-2024-07-18', 'ft:gpt-4o-mini-2024-07-18',
                      'claude-haiku-4-5', 'gpt-4o-2024-08-06'])[1 + tier] AS model_name,
               CASE WHEN kind = 'serving' THEN
                        CASE WHEN mod(h4, 100) < 10 THEN -1
                             WHEN mod(h4, 100) < 65 THEN 0
                             ELSE 1 + mod(h5 / 7, %(per_project)s - 1) END
                    WHEN kind IN ('evaluation', 'judging') THEN
                        CASE WHEN mod(h4, 100) < 20 THEN -1
                             ELSE mod(h5 / 7, %(per_project)s) END
                    ELSE mod(h5 / 7, %(per_project)s) END AS vidx
        FROM (
            SELECT g, h4, h5, h6, h7,
                   floor(%(project_count)s * power(mod(h1, 1000000) / 1000000.0, 2))::int
                       AS pidx,
                   CASE WHEN mod(h2, 1000) < 920 THEN 'serving'
                        WHEN mod(h2, 1000) < 960 THEN 'evaluation'
                        WHEN mod(h2, 1000) < 990 THEN 'judging'
                        WHEN mod(h2, 1000) < 995 THEN 'training'
                        ELSE 'data_preparation' END AS kind,
                   mod(h3, 100) < 5 AS unpriced,
                   mod(h3 / 100, 4)::int AS tier,
                   %(oldest)s::timestamptz
                       + make_interval(secs => (g - 1)::float8 / %(rows)s * %(span)s) AS at
            FROM (
                SELECT g,
                       hashint8extended(g, 1) & 9223372036854775807 AS h1,
                       hashint8extended(g, 2) & 9223372036854775807 AS h2,
                       hashint8extended(g, 3) & 9223372036854775807 AS h3,
                       hashint8extended(g, 4) & 9223372036854775807 AS h4,
                       hashint8extended(g, 5) & 9223372036854775807 AS h5,
                       hashint8extended(g, 6) & 9223372036854775807 AS h6,
                       hashint8extended(g, 7) & 9223372036854775807 AS h7
                FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
            ) hashed
        ) drawn
    ) versioned
) priced
"""

# What the writer's upserts (costs.services._ledger_day_add) add up to, all at once.
LEDGER_DAY_SQL = """
INSERT INTO costs_ledgerday (
    project_id, day, kind, model_version_key, amount, entries, unpriced_entries, tokens,
    compute_seconds
)
SELECT project_id, (occurred_at AT TIME ZONE 'UTC')::date, kind, coalesce(model_version_id, 0),
       coalesce(sum(amount), 0), count(*), count(*) FILTER (WHERE amount IS NULL),
       coalesce(sum(quantity) FILTER (WHERE unit = 'tokens'), 0),
       coalesce(sum(quantity) FILTER (WHERE unit = 'compute_seconds'), 0)
FROM costs_ledgerentry
GROUP BY 1, 2, 3, 4
"""

# The bench's own check of the daily sums: per kind, the same from both tables.
SUMS_SQL = {
    "ledger": """
        SELECT kind, sum(amount), count(*), count(*) FILTER (WHERE amount IS NULL),
               coalesce(sum(quantity) FILTER (WHERE unit = 'tokens'), 0),
               coalesce(sum(quantity) FILTER (WHERE unit = 'compute_seconds'), 0)
        FROM costs_ledgerentry GROUP BY kind ORDER BY kind
    """,
    "days": """
        SELECT kind, sum(amount), sum(entries), sum(unpriced_entries), sum(tokens),
               sum(compute_seconds)
        FROM costs_ledgerday GROUP BY kind ORDER BY kind
    """,
}


def _secondary_indexes(cursor: Any, table: str) -> list[tuple[str, str]]:
    """The table's indexes that back no constraint (the primary key and the unique ones
    stay), as (name, CREATE INDEX statement)."""
    cursor.execute(
        """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE tablename = %s AND indexname NOT IN (SELECT conname FROM pg_constraint)
        ORDER BY indexname
        """,
        [table],
    )
    return list(cursor.fetchall())


@dataclass
class World:
    """What the generated rows name: the projects, largest first, and the production versions."""

    project_ids: list[int]
    production_version_ids: list[int]


def versions_create(
    project_ids: list[int], production: int
) -> tuple[list[int], list[int], list[int]]:
    """VERSIONS_PER_PROJECT versions of each project, each with its training job, in project
    order (the generator's index), and the ``production`` alias on the first version of the
    first ``production`` projects; returns (version ids, job ids, production version ids).
    The jobs and versions name a dataset, base model and author that are not there (foreign
    keys unchecked in this session only): the dashboard never reads them."""
    from registry.models import PRODUCTION_ALIAS, Alias, ModelVersion, RegisteredModel
    from training.models import JobStatus, TrainingJob

    version_ids: list[int] = []
    job_ids: list[int] = []
    production_ids: list[int] = []
    for position, project_id in enumerate(project_ids):
        models = [
            RegisteredModel.objects.create(project_id=project_id, name="support-assistant"),
            RegisteredModel.objects.create(project_id=project_id, name="ticket-triage"),
        ]
        jobs = TrainingJob.objects.bulk_create(
            TrainingJob(
                project_id=project_id,
                dataset_version_id=1,
                base_model_id=1,
                provider="local",
                hyperparameters={},
                model_name=models[0 if index < VERSIONS_FIRST_MODEL else 1].name,
                status=JobStatus.SUCCEEDED,
                created_by_id=1,
            )
            for index in range(VERSIONS_PER_PROJECT)
        )
        versions = ModelVersion.objects.bulk_create(
            ModelVersion(
                registered_model=models[0 if index < VERSIONS_FIRST_MODEL else 1],
                number=1
                + (index if index < VERSIONS_FIRST_MODEL else index - VERSIONS_FIRST_MODEL),
                training_job_id=job.pk,
                fine_tuned_model=f"ft:bench-{project_id}-{index}",
                dataset_version_id=1,
                dataset_hash="",
                base_model_id=1,
                hyperparameters={},
                adapter_dir="",
            )
            for index, job in enumerate(jobs)
        )
        job_ids.extend(job.pk for job in jobs)
        version_ids.extend(version.pk for version in versions)
        if position < production:
            Alias.objects.create(
                registered_model=models[0], name=PRODUCTION_ALIAS, model_version=versions[0]
            )
            production_ids.append(versions[0].pk)
    return version_ids, job_ids, production_ids


def generate(args: argparse.Namespace) -> World:
    from django.db import connection
    from django.utils import timezone

    from ftportal.models import Project

    project_ids = [
        Project.objects.create(name=f"project-{index + 1:02d}").pk for index in range(args.projects)
    ]
    newest = timezone.now()
    span = args.days * 86_400
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SET synchronous_commit = off")
        version_ids, job_ids, production_ids = versions_create(project_ids, args.production)
        ledger_indexes = _secondary_indexes(cursor, "costs_ledgerentry")
        day_indexes = _secondary_indexes(cursor, "costs_ledgerday")
        for name, _ in ledger_indexes + day_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        for first in range(1, args.rows + 1, GENERATE_CHUNK_ROWS):
            last = min(args.rows, first + GENERATE_CHUNK_ROWS - 1)
            cursor.execute(
                GENERATE_SQL,
                {
                    "projects": project_ids,
                    "project_count": len(project_ids),
                    "versions": version_ids,
                    "jobs": job_ids,
                    "per_project": VERSIONS_PER_PROJECT,
                    "oldest": newest - dt.timedelta(seconds=span),
                    "span": span,
                    "rows": args.rows,
                    "first": first,
                    "last": last,
                },
            )
            print(f"generated {last} rows ({time.perf_counter() - started:.0f} s)", flush=True)
        started = time.perf_counter()
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute(LEDGER_DAY_SQL)
        print(f"{cursor.rowcount} daily sums in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for _, statement in ledger_indexes + day_indexes:
            cursor.execute(statement)
        print(
            f"{len(ledger_indexes) + len(day_indexes)} indexes built in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        # The timed reads run with the server's settings, as the page's do.
        for setting in ("work_mem", "maintenance_work_mem", "synchronous_commit"):
            cursor.execute(f"RESET {setting}")
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("VACUUM ANALYZE costs_ledgerentry")
        cursor.execute("VACUUM ANALYZE costs_ledgerday")
        cursor.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('costs_ledgerentry')), "
            "pg_size_pretty(pg_total_relation_size('costs_ledgerday'))"
        )
        ledger_size, days_size = cursor.fetchone()
        print(f"the ledger with its indexes: {ledger_size}; the daily sums: {days_size}")
    return World(project_ids=project_ids, production_version_ids=production_ids)


def sums_agree() -> bool:
    """The daily sums equal the ledger's, per kind: amount, spends, unpriced spends, tokens,
    compute seconds."""
    from django.db import connection

    with connection.cursor() as cursor:
        tables = {}
        for name, statement in SUMS_SQL.items():
            cursor.execute(statement)
            tables[name] = [tuple(row) for row in cursor.fetchall()]
    for row in tables["days"]:
        print(f"daily sums of {row[0]}: ${row[1]}, {row[2]} spends, {row[3]} unpriced")
    return tables["ledger"] == tables["days"]


# --- the three figures, three ways ----------------------------------------------------------------

Sums = tuple[Decimal, int, int]  # amount, spends, unpriced spends


@dataclass
class Figures:
    """The total, by (month, kind) and by (project id, kind), however they were computed."""

    total: Sums
    by_month: dict[tuple[dt.date, str], Sums]
    by_project: dict[tuple[int, str], Sums]


def selector_figures(chosen: Any) -> Figures:
    from costs.selectors import spend_by_month_and_kind, spend_by_project, spend_total

    total = spend_total(chosen)
    return Figures(
        total=(total.amount, total.entries, total.unpriced_entries),
        by_month={
            (row.month, row.kind): (row.spend.amount, row.spend.entries, row.spend.unpriced_entries)
            for row in spend_by_month_and_kind(chosen)
        },
        by_project={
            (row.project.pk, kind): (spend.amount, spend.entries, spend.unpriced_entries)
            for row in spend_by_project(chosen)
            for kind, spend in row.by_kind.items()
        },
    )


def _ledger_rows(chosen: Any) -> Any:
    """The ledger rows in view, unordered (a sort is no part of summing them)."""
    from costs.models import LedgerEntry

    first, after = chosen.moments
    return LedgerEntry.objects.filter(
        project_id__in=chosen.project_ids, occurred_at__gte=first, occurred_at__lt=after
    ).order_by()


def naive_figures(chosen: Any) -> Figures:
    """Every ledger row in view read and summed in Python, the three figures in one pass."""
    total: list[Any] = [ZERO, 0, 0]
    by_month: dict[tuple[dt.date, str], list[Any]] = defaultdict(lambda: [ZERO, 0, 0])
    by_project: dict[tuple[int, str], list[Any]] = defaultdict(lambda: [ZERO, 0, 0])
    rows = _ledger_rows(chosen).values_list("occurred_at", "project_id", "kind", "amount")
    for at, project_id, kind, amount in rows.iterator(chunk_size=NAIVE_CHUNK_ROWS):
        month = at.astimezone(dt.UTC).date().replace(day=1)
        for sums in (total, by_month[(month, kind)], by_project[(project_id, kind)]):
            sums[1] += 1
            if amount is None:
                sums[2] += 1
            else:
                sums[0] += amount
    return Figures(
        total=(total[0], total[1], total[2]),
        by_month={key: (s[0], s[1], s[2]) for key, s in by_month.items()},
        by_project={key: (s[0], s[1], s[2]) for key, s in by_project.items()},
    )


def groupby_figures(chosen: Any) -> Figures:
    """The three as SQL GROUP BY over the ledger rows, without the daily sums."""
    from django.db.models import Count, Q, Sum
    from django.db.models.functions import TruncMonth

    sums = {
        "spent": Sum("amount"),
        "spends": Count("id"),
        "unpriced": Count("id", filter=Q(amount__isnull=True)),
    }

    def triple(row: dict[str, Any]) -> Sums:
        return (row["spent"] or ZERO, row["spends"], row["unpriced"])

    rows = _ledger_rows(chosen)
    by_month = (
        rows.annotate(month=TruncMonth("occurred_at", tzinfo=dt.UTC))
        .values("month", "kind")
        .annotate(**sums)
    )
    by_project = rows.values("project_id", "kind").annotate(**sums)
    return Figures(
        total=triple(rows.aggregate(**sums)),
        by_month={(row["month"].date(), row["kind"]): triple(row) for row in by_month},
        by_project={(row["project_id"], row["kind"]): triple(row) for row in by_project},
    )


# --- timing ---------------------------------------------------------------------------------------

# The selectors that count towards max_query_ms (the dashboard whole and the baselines do not).
SELECTORS = (
    "total",
    "by_month",
    "by_project",
    "drivers",
    "unpriced",
    "versions",
    "production",
    "trends",
)


def reads_of(chosen: Any) -> dict[str, Callable[[], object]]:
    """Each selector as ``cost_dashboard`` calls it, the whole dashboard, the export's first
    rows and the two baselines."""
    from costs.selectors import (
        cost_dashboard,
        metric_trend,
        production_model,
        production_versions,
        spend_by_month_and_kind,
        spend_by_project,
        spend_total,
        top_cost_drivers,
        unpriced_spends,
    )
    from costs.views import ledger_csv_lines

    versions = production_versions(chosen)

    def export() -> int:
        lines = ledger_csv_lines(chosen)
        read = sum(1 for _ in islice(lines, EXPORT_ROWS + 1)) - 1  # less the header
        lines.close()  # closes the cursor and its transaction, as the response's end does
        return read

    return {
        "total": lambda: spend_total(chosen),
        "by_month": lambda: spend_by_month_and_kind(chosen),
        "by_project": lambda: spend_by_project(chosen),
        "drivers": lambda: top_cost_drivers(chosen),
        "unpriced": lambda: unpriced_spends(chosen),
        "versions": lambda: production_versions(chosen),
        "production": lambda: [production_model(version, chosen) for version in versions],
        "trends": lambda: [metric_trend(version, chosen) for version in versions],
        "dashboard": lambda: cost_dashboard(chosen),
        "export": export,
        "naive": lambda: naive_figures(chosen),
        "groupby": lambda: groupby_figures(chosen),
    }


def timed_ms(read: Callable[[], object]) -> float:
    started = time.perf_counter()
    read()
    return (time.perf_counter() - started) * 1000


def slowest_statement_explained(read: Callable[[], object]) -> str:
    """The slowest SQL statement ``read`` runs, with its EXPLAIN (ANALYZE, BUFFERS)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        read()
    slowest = max(captured.captured_queries, key=lambda query: float(query["time"]))
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return (
        f"{len(captured.captured_queries)} statements; the slowest "
        f"({float(slowest['time']) * 1000:.1f} ms):\n{slowest['sql']}\n{plan}"
    )


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.http import QueryDict

    from costs.models import LedgerDay
    from costs.selectors import cost_projects
    from costs.views import cost_filter_from

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    world = generate(args)
    print(f"migrated and generated in {time.perf_counter() - started:.0f} s (not timed)")
    sums_ok = sums_agree()
    day_rows = LedgerDay.objects.count()

    # An admin's view: every project; the page's default days, and one project's last month.
    visible = cost_projects(User(username="admin", is_superuser=True))
    views = {"all": cost_filter_from(QueryDict(), visible)}
    last_month_end = views["all"].end.replace(day=1) - dt.timedelta(days=1)
    views["one"] = cost_filter_from(
        QueryDict(
            f"project={world.project_ids[0]}&start={last_month_end.replace(day=1)}"
            f"&end={last_month_end}"
        ),
        visible,
    )
    view_rows = {name: _ledger_rows(chosen).count() for name, chosen in views.items()}
    for name, chosen in views.items():
        print(
            f"view {name}: {len(chosen.project_ids)} projects, {chosen.start} to {chosen.end}, "
            f"{view_rows[name]} ledger rows"
        )

    figures_ok = True
    for name, chosen in views.items():
        ours = selector_figures(chosen)
        for baseline, theirs in (
            ("naive", naive_figures(chosen)),
            ("groupby", groupby_figures(chosen)),
        ):
            if theirs != ours:
                figures_ok = False
                print(f"view {name}: the {baseline} figures differ from the selectors'")
        print(
            f"view {name}: total ${ours.total[0]}, {ours.total[1]} spends, {ours.total[2]} unpriced"
        )

    reads = {
        f"{view}_{name}": read
        for view, chosen in views.items()
        for name, read in reads_of(chosen).items()
    }
    for read in reads.values():
        read()  # warm the plan cache and the buffers alike for every side
    times: dict[str, list[float]] = {name: [] for name in reads}
    for repeat in range(args.repeats):
        # Alternate the order, so no side always reads after the other.
        for name, read in list(reads.items())[:: -1 if repeat % 2 else 1]:
            times[name].append(timed_ms(read))
        print(f"repeat {repeat + 1} done", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name}: {value:.2f} ms")

    selectors = {f"{view}_{name}": median[f"{view}_{name}"] for view in views for name in SELECTORS}
    worst = max(selectors, key=lambda name: selectors[name])
    for name, value in selectors.items():
        if value > LIMIT_MS or name == worst:
            print(f"--- {name}: {value:.1f} ms; {slowest_statement_explained(reads[name])}")

    ratios = []
    for view in views:
        ours_ms = sum(median[f"{view}_{name}"] for name in ("total", "by_month", "by_project"))
        naive_ms, groupby_ms = median[f"{view}_naive"], median[f"{view}_groupby"]
        prefix = "" if view == "all" else f"{view}_"
        exported = min(EXPORT_ROWS, view_rows[view])
        ratios.append(
            f"{prefix}naive_ms={naive_ms:.1f} {prefix}groupby_ms={groupby_ms:.1f} "
            f"{prefix}speedup={naive_ms / ours_ms:.1f} "
            f"{prefix}groupby_speedup={groupby_ms / ours_ms:.1f} "
            f"{prefix}export_rows_per_s={exported / median[f'{view}_export'] * 1000:.0f}"
        )
    timings = " ".join(
        f"{name}_ms={value:.2f}"
        for name, value in median.items()
        if not name.endswith(("_naive", "_groupby"))
    )
    print(
        f"rows={args.rows} days={args.days} projects={args.projects} "
        f"production_models={len(world.production_version_ids)} day_rows={day_rows} "
        f"all_view_rows={view_rows['all']} one_view_rows={view_rows['one']} "
        f"repeats={args.repeats} {timings} {' '.join(ratios)} "
        f"max_query={worst} max_query_ms={selectors[worst]:.2f} "
        f"limit_ok={int(selectors[worst] <= LIMIT_MS)} sums_ok={int(sums_ok)} "
        f"figures_ok={int(figures_ok)}"
    )
    if not (sums_ok and figures_ok):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--production", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.rows < 10_000 or args.days < 400 or not 1 <= args.production <= args.projects:
        parser.error(
            "--rows at least 10000; --days at least 400 (the view is the last twelve months); "
            "--production between 1 and --projects"
        )
    free_gb = shutil.disk_usage("/").free / 1e9
    # About 0.5 GB a million rows with their indexes, and as much again of WAL for a while.
    if free_gb < 1.5 * args.rows / 1e6:
        parser.error(f"{free_gb:.0f} GB free on /: too little for {args.rows} rows")

    in_scratch_django_database("ftportal_bench_costs", lambda: run(args))


if __name__ == "__main__":
    main()
