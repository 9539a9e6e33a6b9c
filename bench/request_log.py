"""The request log browser at 10 million rows: every filter's first page and a deep keyset page,
through the page's own selectors, against the baselines the indexes replace, over generated rows
in a throwaway Postgres database.

    python bench/request_log.py [--rows 10000000] [--depth-share 0.9] [--repeats 5]

Creates its own database next to DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/ftportal), migrates it, and generates ``--rows`` log rows in
Postgres itself (INSERT ... SELECT from generate_series, a million rows per statement), with the
table's secondary indexes dropped while it fills and built again afterwards, and foreign-key
checks off for the session (``session_replication_role = replica``: the three versions the rows
name are rows whose training run, data and base model are not, as a version needs a training
run; the page joins the versions and their model, never those). The rows, over 180 days, three
to an instant (the keyset's id tie-break is exercised):

- projects: 90% in the browsed project, the rest in two others;
- versions: three in turn (the oldest 40% of the time, the next 50%, the newest 10%);
- an experiment over 10% of the time (30% to 40% back): arms control and challenger, and the
  shadow arm mirroring a tenth of them (about 1% of all rows, ``shadow_of`` set);
- status: 1% error, 1% fallback, 0.5% refused, the rest ok; 50,000 caller users; twelve kinds
  of ticket in the messages, a category and priority as the output; latency, tokens, cost.

Feedback: 3% of the browsed project's answered requests (a third thumbs down or a low score,
a quarter of those with a correction), inserted into the feedback table and copied onto the
rows by the migration's own backfill (timed, not part of the figures). Then VACUUM ANALYZE.

Timed (median of ``--repeats``, after one warming read of each), each through
``serving.selectors.request_log_page`` over ``request_logs_filtered`` as the page calls them,
for every filter of the browser: its first page and the page after a row ``--depth-share`` of
the way down that filter's rows. The text search: a common word (1 request in 12), a word in 1
of 500, a rare one (about 10 rows), and the rare one within one day's dates. Baselines in the
same run: the feedback filters as an EXISTS on the feedback table per row (what the browser did
before the copied column), checked to return the same rows, and the unfiltered deep page by
OFFSET, checked likewise. Each filter's plan is checked to read the index it should (the line
``plans_ok``). Last, what the indexes cost the log's writer: a batch of 100 rows written with
every index, and again without the trigram index. The last line is key=value.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

PAGE_ROWS = 50
GENERATE_CHUNK_ROWS = 1_000_000
SPAN_DAYS = 180
VERSION_IDS = (101, 102, 103)
# In about 10 rows of the 10 million, and in 1 row of 500.
RARE_WORD = "zeppelin"
MEDIUM_WORD = "urgently"
WRITE_BATCH_ROWS = 100

# One statement per chunk; ``h`` is a multiplicative hash of g, so that every column varies
# independently of the row's age; ``age`` runs from 0 (newest) to 1 (oldest).
GENERATE_SQL = """
INSERT INTO serving_requestlog (
    project_id, request_id, requested_model, served_version_id, experiment_arm, shadow_of,
    messages, output, status, error, fallback_cause, fallback_reason, latency_ms,
    prompt_tokens, completion_tokens, cost, cost_known, caller_user, redacted,
    feedback_corrected, created_at
)
SELECT
    CASE WHEN h %% 100 < 90 THEN %(browsed)s WHEN h %% 100 < 97 THEN %(other_a)s
         ELSE %(other_b)s END,
    'req_' || lpad(to_hex(g), 32, '0'),
    'support-triage/production',
    CASE WHEN age > 0.6 THEN %(v1)s WHEN age > 0.1 THEN %(v2)s ELSE %(v3)s END,
    CASE WHEN NOT in_experiment THEN ''
         WHEN shadow THEN 'shadow'
         WHEN h %% 2 = 0 THEN 'control' ELSE 'challenger' END,
    CASE WHEN shadow THEN 'req_' || lpad(to_hex(g + 1), 32, '0') ELSE '' END,
    jsonb_build_array(
        jsonb_build_object('role', 'system', 'content', 'Triage the support ticket as JSON.'),
        jsonb_build_object('role', 'user', 'content',
            (ARRAY['my invoice is wrong', 'the package arrived damaged', 'I cannot log in',
                   'please refund my order', 'the app crashes on start', 'change my address',
                   'I was charged twice', 'where is my parcel', 'cancel my subscription',
                   'the discount code fails', 'reset my password', 'the item is missing'
            ])[1 + (h / 13) %% 12]
            || CASE WHEN g %% 1000003 = 17 THEN ' ' || %(rare)s ELSE '' END
            || CASE WHEN g %% 500 = 7 THEN ' ' || %(medium)s ELSE '' END
            || ' (order ' || (h %% 900000 + 100000) || ')')
    ),
    CASE WHEN status = 'error' OR status = 'refused' THEN ''
         ELSE '{"category": "' || (ARRAY['billing', 'shipping', 'account', 'technical'])
              [1 + (h / 13) %% 4] || '", "priority": "'
              || (ARRAY['low', 'normal', 'high'])[1 + (h / 29) %% 3] || '"}' END,
    status,
    CASE WHEN status = 'error' THEN 'The backend timed out.'
         WHEN status = 'refused' THEN 'rate limit' ELSE '' END,
    CASE WHEN status = 'fallback' THEN 'timeout' ELSE '' END,
    CASE WHEN status = 'fallback' THEN 'primary did not answer within 30 s' ELSE '' END,
    40 + (h / 19) %% 900, 60 + (h / 23) %% 400, 8 + (h / 31) %% 40,
    ((60 + (h / 23) %% 400) * 0.0000004)::numeric(14, 8), true,
    'user-' || ((h / 17) %% 50000), false, false,
    %(newest)s - make_interval(secs => (g / 3) * %(step)s)
FROM (
    SELECT g, h, age,
           age BETWEEN 0.3 AND 0.4 AS in_experiment,
           age BETWEEN 0.3 AND 0.4 AND (h / 7) %% 10 = 0 AS shadow,
           CASE WHEN (h / 101) %% 1000 < 10 THEN 'error'
                WHEN (h / 101) %% 1000 < 20 THEN 'fallback'
                WHEN (h / 101) %% 1000 < 25 THEN 'refused' ELSE 'ok' END AS status
    FROM (
        SELECT g, (g::bigint * 2654435761) %% 4294967296 AS h, g::float8 / %(rows)s AS age
        FROM generate_series(%(first)s, %(last)s) AS g
    ) hashed
) drawn
"""

# 3% of the browsed project's answered requests, by a hash of the id.
FEEDBACK_SQL = """
INSERT INTO serving_feedback (
    project_id, request_id, score, comment, correction, caller_user, created_at, updated_at
)
SELECT project_id, request_id,
       (ARRAY[0.0, 0.3, 1.0, 1.0, 1.0, 0.8])[1 + (id / 7) %% 6],
       CASE WHEN (id / 7) %% 6 < 2 THEN 'wrong team' ELSE '' END,
       CASE WHEN (id / 7) %% 6 < 2 AND (id / 11) %% 4 = 0
            THEN '{"category": "billing", "priority": "high"}' ELSE '' END,
       caller_user, created_at, created_at
FROM serving_requestlog
WHERE project_id = %(project)s AND shadow_of = '' AND (id * 31) %% 1000 < 30
"""


def _secondary_indexes(cursor: Any) -> list[tuple[str, str]]:
    """The log's indexes that back no constraint (the primary key and the unique request id
    stay), as (name, CREATE INDEX statement)."""
    cursor.execute(
        """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE tablename = 'serving_requestlog'
          AND indexname NOT IN (SELECT conname FROM pg_constraint)
        ORDER BY indexname
        """
    )
    return list(cursor.fetchall())


# The three versions the rows name, so that the page's joins find them: a real version needs a
# training run and its data, which the page never reads (foreign keys unchecked here only).
VERSIONS_SQL = """
INSERT INTO registry_modelversion (
    id, registered_model_id, number, training_job_id, fine_tuned_model, dataset_version_id,
    dataset_hash, base_model_id, hyperparameters, adapter_dir, created_at
)
SELECT id, %(model)s, n, 1, 'ft:bench-' || n, 1, '', 1, '{}', '', now()
FROM unnest(%(ids)s::int[], ARRAY[1, 2, 3]) AS v(id, n)
"""


def generate(rows: int, *, browsed: int, others: tuple[int, int]) -> None:
    from django.db import connection
    from django.utils import timezone

    from registry.models import RegisteredModel

    step = SPAN_DAYS * 86_400 * 3 / rows
    model = RegisteredModel.objects.create(project_id=browsed, name="support-triage")
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(VERSIONS_SQL, {"model": model.pk, "ids": list(VERSION_IDS)})
        indexes = _secondary_indexes(cursor)
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        for first in range(1, rows + 1, GENERATE_CHUNK_ROWS):
            last = min(rows, first + GENERATE_CHUNK_ROWS - 1)
            cursor.execute(
                GENERATE_SQL,
                {
                    "browsed": browsed,
                    "other_a": others[0],
                    "other_b": others[1],
                    "v1": VERSION_IDS[0],
                    "v2": VERSION_IDS[1],
                    "v3": VERSION_IDS[2],
                    "rare": RARE_WORD,
                    "medium": MEDIUM_WORD,
                    "newest": timezone.now(),
                    "step": step,
                    "rows": rows,
                    "first": first,
                    "last": last,
                },
            )
            print(f"generated {last} rows ({time.perf_counter() - started:.0f} s)", flush=True)
        cursor.execute(FEEDBACK_SQL, {"project": browsed})
        print(f"feedback on {cursor.rowcount} requests", flush=True)
        started = time.perf_counter()
        backfill = importlib.import_module("serving.migrations.0006_feedback_on_request_log")
        from django.apps import apps

        backfill.copy_feedback_to_log(apps, None)
        print(f"the migration's backfill: {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for _, statement in indexes:
            cursor.execute(statement)
        print(f"{len(indexes)} indexes built in {time.perf_counter() - started:.0f} s", flush=True)
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("VACUUM ANALYZE serving_requestlog")
        cursor.execute("VACUUM ANALYZE serving_feedback")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('serving_requestlog'))")
        print(f"the log's table and indexes: {cursor.fetchone()[0]}", flush=True)


def batch_writes_ms(project: int, repeats: int) -> float:
    """The median time of ``request_logs_write`` for a batch of WRITE_BATCH_ROWS rows like the
    generated ones (the feedback lookup included), over ``2 * repeats`` batches."""
    from django.utils import timezone

    from serving.request_log import RequestLogEntry, request_logs_write

    times = []
    for batch in range(2 * repeats):
        entries = [
            RequestLogEntry(
                project_id=project,
                requested_model="support-triage/production",
                messages=[
                    {"role": "system", "content": "Triage the support ticket as JSON."},
                    {"role": "user", "content": f"where is my parcel (order {batch}{n:05d})"},
                ],
                output='{"category": "shipping", "priority": "normal"}',
                status="ok",
                latency_ms=120,
                prompt_tokens=80,
                completion_tokens=12,
                caller_user=f"user-{n}",
                created_at=timezone.now(),
            )
            for n in range(WRITE_BATCH_ROWS)
        ]
        started = time.perf_counter()
        request_logs_write(entries)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def timed_ms(read: Callable[[], list[int]]) -> tuple[float, list[int]]:
    started = time.perf_counter()
    ids = read()
    return (time.perf_counter() - started) * 1000, ids


@dataclass
class Case:
    """One filter of the browser: its rows, the index its plan should read, and its pages."""

    name: str
    rows: Any  # QuerySet[RequestLog]
    index: str
    # The page after this row is the deep page; None: the filter's first page only.
    deep_after: Any = None


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Exists, OuterRef

    from ftportal.models import Project
    from serving.models import Feedback, RequestStatus
    from serving.selectors import (
        POSITIVE_SCORE,
        FeedbackFilter,
        LogCursor,
        RequestLogFilters,
        TrafficFilter,
        request_log_page,
        request_logs_filtered,
    )

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    browsed = Project.objects.create(name="browsed")
    others = (Project.objects.create(name="other a").pk, Project.objects.create(name="other b").pk)
    generate(args.rows, browsed=browsed.pk, others=others)
    print(f"migrated and generated in {time.perf_counter() - started:.0f} s (not timed)")

    newest = request_logs_filtered(browsed, RequestLogFilters()).values_list(
        "created_at", flat=True
    )[0]
    middle_day = newest - timedelta(days=SPAN_DAYS // 2)

    def filtered(**filters: Any) -> Any:
        return request_logs_filtered(browsed, RequestLogFilters(**filters))

    def old_feedback(wanted: str) -> Any:
        """The feedback filter as the browser had it: an EXISTS on the feedback table."""
        given = Feedback.objects.filter(project=browsed, request_id=OuterRef("request_id"))
        if wanted == FeedbackFilter.DOWN:
            given = given.filter(score__lt=POSITIVE_SCORE)
        elif wanted == FeedbackFilter.CORRECTED:
            given = given.exclude(correction="")
        return filtered().filter(Exists(given))

    newest_index = "request_log_project_newest"
    feedback_index = "request_log_feedback_newest"
    text_index = "request_log_text_search"
    cases = [
        Case("all", filtered(), newest_index),
        Case("all_traffic", filtered(traffic=TrafficFilter.ALL), newest_index),
        Case("shadow", filtered(traffic=TrafficFilter.SHADOW), "request_log_shadow_newest"),
        Case("version_old", filtered(served_version_id=VERSION_IDS[0]), "request_log_version"),
        Case("version_new", filtered(served_version_id=VERSION_IDS[2]), "request_log_version"),
        Case("status_error", filtered(status=RequestStatus.ERROR), "request_log_status_newest"),
        Case("arm", filtered(experiment_arm="challenger"), "request_log_arm_newest"),
        Case(
            "dates",
            filtered(since=middle_day, until=middle_day + timedelta(days=1)),
            newest_index,
        ),
        Case("feedback_any", filtered(feedback=FeedbackFilter.ANY), feedback_index),
        Case("feedback_down", filtered(feedback=FeedbackFilter.DOWN), feedback_index),
        Case("feedback_up", filtered(feedback=FeedbackFilter.UP), feedback_index),
        Case("feedback_corrected", filtered(feedback=FeedbackFilter.CORRECTED), feedback_index),
        Case("feedback_none", filtered(feedback=FeedbackFilter.NONE), newest_index),
        Case("text_common", filtered(text="refund"), newest_index),
        Case("text_medium", filtered(text=MEDIUM_WORD), text_index),
        Case("text_rare", filtered(text=RARE_WORD), text_index),
        Case(
            "text_rare_one_day",
            filtered(text=RARE_WORD, since=middle_day, until=middle_day + timedelta(days=1)),
            text_index,
        ),
    ]
    baselines = [
        Case("exists_feedback_down", old_feedback(FeedbackFilter.DOWN), ""),
        Case("exists_feedback_corrected", old_feedback(FeedbackFilter.CORRECTED), ""),
    ]

    # The deep page of each: after the row depth-share of the way down (found by OFFSET once,
    # not timed).
    started = time.perf_counter()
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.name] = case.rows.count()
        depth = int(counts[case.name] * args.depth_share)
        if counts[case.name] > PAGE_ROWS and depth > 0:
            case.deep_after = LogCursor.of(case.rows[depth - 1 : depth].get())
    by_name = {case.name: case for case in cases}
    for baseline in baselines:
        baseline.deep_after = by_name[baseline.name.removeprefix("exists_")].deep_after
    print(
        f"rows per filter (counted in {time.perf_counter() - started:.0f} s, not timed): {counts}"
    )

    # Each filter's plan reads the index it should (EXPLAIN, not timed).
    plans_ok = True
    for case in cases:
        plan = case.rows[: PAGE_ROWS + 1].explain()
        scans = [
            line.strip().lstrip("-> ").split("  (cost")[0]
            for line in plan.splitlines()
            if "serving_requestlog" in line or "request_log_" in line
        ]
        ok = case.index in plan
        plans_ok = plans_ok and ok
        shown = " | ".join(line for line in scans if " on " in line)
        print(f"plan {case.name}: {shown}{'' if ok else f'  <-- expected {case.index}'}")

    def page_of(case: Case, *, deep: bool) -> Callable[[], list[int]]:
        def read() -> list[int]:
            after = case.deep_after if deep else None
            return [row.pk for row in request_log_page(case.rows, older_than=after).rows]

        return read

    reads: dict[str, Callable[[], list[int]]] = {}
    for case in cases + baselines:
        reads[f"{case.name}_first"] = page_of(case, deep=False)
        if case.deep_after is not None:
            reads[f"{case.name}_deep"] = page_of(case, deep=True)
    project_rows = counts["all"]
    depth = int(project_rows * args.depth_share)

    def offset() -> list[int]:
        rows = request_logs_filtered(browsed, RequestLogFilters())
        return [row.pk for row in rows[depth : depth + PAGE_ROWS]]

    reads["offset_all_deep"] = offset

    results: dict[str, list[int]] = {}
    for name, read in reads.items():
        results[name] = read()  # warm the plan cache and the buffers alike for every side
    for new, old in (
        ("feedback_down", "exists_feedback_down"),
        ("feedback_corrected", "exists_feedback_corrected"),
        ("all", "offset_all"),
    ):
        for page in ("first", "deep") if not old.startswith("offset") else ("deep",):
            if results[f"{new}_{page}"] != results[f"{old}_{page}"]:
                raise SystemExit(f"{new}_{page} and its baseline {old}_{page} differ")
    times: dict[str, list[float]] = {name: [] for name in reads}
    for repeat in range(args.repeats):
        # Alternate the order, so no side always reads after the other.
        for name, read in list(reads.items())[:: -1 if repeat % 2 else 1]:
            times[name].append(timed_ms(read)[0])
        print(f"repeat {repeat + 1} done", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name}: {value:.2f} ms")

    # What the indexes cost the log's writer: a batch of rows as the gateway queues them,
    # written with every index, then without the trigram index (its write is the largest).
    write_ms = {"write_batch": batch_writes_ms(browsed.pk, args.repeats)}
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {text_index}")
    write_ms["write_batch_without_text_index"] = batch_writes_ms(browsed.pk, args.repeats)
    for name, value in write_ms.items():
        print(f"{name} ({WRITE_BATCH_ROWS} rows): {value:.2f} ms")

    product = {
        name: value for name, value in median.items() if not name.startswith(("exists", "offset"))
    }
    worst = max(product, key=lambda name: product[name])
    figures = " ".join(f"{name}_ms={value:.2f}" for name, value in median.items())
    print(
        f"rows={args.rows} project_rows={project_rows} page={PAGE_ROWS} repeats={args.repeats} "
        f"depth_share={args.depth_share} {figures} "
        f"write_batch_ms={write_ms['write_batch']:.2f} "
        f"write_batch_without_text_index_ms={write_ms['write_batch_without_text_index']:.2f} "
        f"plans_ok={str(plans_ok).lower()} worst={worst} worst_ms={product[worst]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--depth-share", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.rows < 100_000 or not 0 < args.depth_share < 1:
        parser.error("--rows at least 100000; --depth-share between 0 and 1")
    free_gb = shutil.disk_usage("/").free / 1e9
    # About 1 GB a million rows with their indexes, and as much again of WAL for a while.
    if free_gb < 2.5 * args.rows / 1e6:
        parser.error(f"{free_gb:.0f} GB free on /: too little for {args.rows} rows")

    in_scratch_django_database("ftportal_bench_reqlog", lambda: run(args))


if __name__ == "__main__":
    main()
