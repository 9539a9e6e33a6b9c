"""The request log browser at depth: its first page and a deep keyset page against OFFSET
pagination to the same depth, over generated rows in a throwaway Postgres database.

    python bench/request_log.py [--rows 300000] [--depth-share 0.9] [--repeats 7]

Creates its own database next to DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/ftportal), migrates it, and generates ``--rows`` log rows in
Postgres itself (generate_series, a million rows per statement; ``--rows 10000000`` is the
issue's 10 million), 90% in the browsed project and 10% in another; three rows share each
instant, so the keyset's id tie-break is exercised. Then ANALYZE, and the timed reads, through
the same selectors the page uses (``serving.selectors.request_log_page`` over
``request_logs_filtered``):

- first page: the newest 50 rows, unfiltered, and filtered by status = error (1% of rows);
- feedback: 1% of the browsed project's requests get feedback (half thumbs down); the first
  page filtered to thumbs down, a thumbs-down page 90% of the way down them, and the first
  page of requests with no feedback;
- keyset: the 50 rows after a row ``--depth-share`` of the way down the project's log;
- offset: the same 50 rows by ``ORDER BY created_at DESC, id DESC OFFSET depth LIMIT 50``,
  the baseline, checked to return the same rows.

Each repeat runs the keyset and OFFSET reads back to back, alternating which goes first;
medians are printed. Generating, indexing and ANALYZE are not timed; the plans Postgres chose
for the keyset page and the error page are printed (the index each reads). The last line is
key=value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

PAGE_ROWS = 50
GENERATE_CHUNK_ROWS = 1_000_000
# Rows of the project being browsed out of every 10; the rest belong to another project.
BROWSED_OF_TEN = 9


GENERATE_SQL = """
INSERT INTO serving_requestlog (
    project_id, request_id, requested_model, experiment_arm, messages, output, status, error,
    latency_ms, prompt_tokens, completion_tokens, cost, cost_known, caller_user, redacted,
    created_at
)
SELECT
    CASE WHEN g %% 10 < %(browsed)s THEN %(browsed_project)s ELSE %(other_project)s END,
    'req_' || lpad(to_hex(g), 32, '0'),
    'bench/production',
    CASE WHEN g %% 2 = 0 THEN 'control' ELSE 'challenger' END,
    jsonb_build_array(
        jsonb_build_object('role', 'system', 'content', 'Triage the ticket.'),
        jsonb_build_object('role', 'user', 'content', 'ticket ' || g || ': my invoice is wrong')
    ),
    '{"category": "billing", "priority": "normal"}',
    CASE WHEN g %% 100 = 0 THEN 'error' ELSE 'ok' END,
    CASE WHEN g %% 100 = 0 THEN 'backend timed out' ELSE '' END,
    20 + g %% 80, 40, 12, NULL, false, 'user-' || (g %% 5000), false,
    %(newest)s - make_interval(secs => g / 3)
FROM generate_series(%(first)s, %(last)s) AS g
"""


def generate(rows: int, *, browsed_project: int, other_project: int) -> None:
    from django.db import connection
    from django.utils import timezone

    newest = timezone.now()
    with connection.cursor() as cursor:
        for first in range(0, rows, GENERATE_CHUNK_ROWS):
            last = min(rows, first + GENERATE_CHUNK_ROWS) - 1
            cursor.execute(
                GENERATE_SQL,
                {
                    "browsed": BROWSED_OF_TEN,
                    "browsed_project": browsed_project,
                    "other_project": other_project,
                    "newest": newest,
                    "first": first,
                    "last": last,
                },
            )
            print(f"generated {last + 1} rows", flush=True)
        cursor.execute("ANALYZE serving_requestlog")


FEEDBACK_SQL = """
INSERT INTO serving_feedback (
    project_id, request_id, score, comment, correction, caller_user, created_at, updated_at
)
SELECT project_id, request_id, CASE WHEN id %% 2 = 0 THEN 0 ELSE 1 END, '', '', '', now(), now()
FROM serving_requestlog WHERE project_id = %(project)s AND id %% 200 IN (7, 8)
"""


def give_feedback(project: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(FEEDBACK_SQL, {"project": project})
        cursor.execute("ANALYZE serving_feedback")


def timed_ms(read: Callable[[], list[int]]) -> tuple[float, list[int]]:
    started = time.perf_counter()
    ids = read()
    return (time.perf_counter() - started) * 1000, ids


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from ftportal.models import Project
    from serving.models import RequestLog, RequestStatus
    from serving.selectors import (
        FeedbackFilter,
        LogCursor,
        RequestLogFilters,
        request_log_page,
        request_logs_filtered,
    )

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    browsed = Project.objects.create(name="browsed")
    other = Project.objects.create(name="other")
    generate(args.rows, browsed_project=browsed.pk, other_project=other.pk)
    give_feedback(browsed.pk)
    print(f"migrated and generated in {time.perf_counter() - started:.1f} s (not timed)")

    everything = request_logs_filtered(browsed, RequestLogFilters())
    errors = request_logs_filtered(browsed, RequestLogFilters(status=RequestStatus.ERROR))
    down = request_logs_filtered(browsed, RequestLogFilters(feedback=FeedbackFilter.DOWN))
    unrated = request_logs_filtered(browsed, RequestLogFilters(feedback=FeedbackFilter.NONE))
    down_rows = down.count()
    deep_down = LogCursor.of(
        down[int(down_rows * args.depth_share) : int(down_rows * args.depth_share) + 1].get()
    )
    project_rows = everything.count()
    depth = min(project_rows - PAGE_ROWS, int(project_rows * args.depth_share))
    # The row just above the deep page, as a page link would name it (found once, not timed).
    above: Any = everything[depth - 1 : depth].get()
    cursor = LogCursor.of(above)

    def first_page() -> list[int]:
        return [row.pk for row in request_log_page(everything, size=PAGE_ROWS).rows]

    def first_error_page() -> list[int]:
        return [row.pk for row in request_log_page(errors, size=PAGE_ROWS).rows]

    def first_down_page() -> list[int]:
        return [row.pk for row in request_log_page(down, size=PAGE_ROWS).rows]

    def deep_down_page() -> list[int]:
        return [row.pk for row in request_log_page(down, older_than=deep_down, size=PAGE_ROWS).rows]

    def first_unrated_page() -> list[int]:
        return [row.pk for row in request_log_page(unrated, size=PAGE_ROWS).rows]

    def keyset() -> list[int]:
        page = request_log_page(everything, older_than=cursor, size=PAGE_ROWS)
        return [row.pk for row in page.rows]

    def offset() -> list[int]:
        rows = RequestLog.objects.filter(project=browsed).order_by("-created_at", "-id")
        return [row.pk for row in rows[depth : depth + PAGE_ROWS]]

    # The plans, so a slow figure can be read (not timed): the keyset reads an index in order.
    from django.db.models import Q

    keyset_rows = everything.filter(
        Q(created_at__lte=cursor.created_at)
        & (Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id))
    )[: PAGE_ROWS + 1]
    for name, rows in (("keyset", keyset_rows), ("first errors", errors[:PAGE_ROWS])):
        plan = rows.explain().splitlines()
        scan = next((line for line in plan if "on serving_requestlog" in line), plan[0])
        print(f"{name} plan: {scan.strip().lstrip('-> ')}")
    for name, rows in (("thumbs down", down[:PAGE_ROWS]), ("no feedback", unrated[:PAGE_ROWS])):
        plan = [line.strip().lstrip("-> ") for line in rows.explain().splitlines()]
        print(
            f"{name} plan: " + " | ".join(line for line in plan if " on " in line or "Join" in line)
        )
    sides: list[tuple[str, Callable[[], list[int]]]] = [("keyset", keyset), ("offset", offset)]
    times: dict[str, list[float]] = {
        "first": [],
        "first_errors": [],
        "first_down": [],
        "deep_down": [],
        "first_unrated": [],
        "keyset": [],
        "offset": [],
    }
    feedback_reads = {
        "first_down": first_down_page,
        "deep_down": deep_down_page,
        "first_unrated": first_unrated_page,
    }
    for read in (first_page, first_error_page, keyset, offset, *feedback_reads.values()):
        read()  # warm the plan cache and the buffers alike for every side
    for repeat in range(args.repeats):
        times["first"].append(timed_ms(first_page)[0])
        times["first_errors"].append(timed_ms(first_error_page)[0])
        for name, read in feedback_reads.items():
            times[name].append(timed_ms(read)[0])
        results: dict[str, list[int]] = {}
        for name, read in sides[::-1] if repeat % 2 else sides:
            seconds, results[name] = timed_ms(read)
            times[name].append(seconds)
        if results["keyset"] != results["offset"]:
            raise SystemExit("keyset and OFFSET pages differ")
        print(
            f"repeat {repeat + 1}: keyset {times['keyset'][-1]:.2f} ms, "
            f"offset {times['offset'][-1]:.2f} ms",
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"rows={args.rows} project_rows={project_rows} depth={depth} page={PAGE_ROWS} "
        f"repeats={args.repeats} first_page_ms={median['first']:.2f} "
        f"first_error_page_ms={median['first_errors']:.2f} feedback_rows={down_rows * 2} "
        f"first_down_page_ms={median['first_down']:.2f} "
        f"deep_down_page_ms={median['deep_down']:.2f} "
        f"first_unrated_page_ms={median['first_unrated']:.2f} keyset_ms={median['keyset']:.2f} "
        f"offset_ms={median['offset']:.2f} ratio={median['offset'] / median['keyset']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--depth-share", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.rows < 10 * PAGE_ROWS or not 0 < args.depth_share < 1:
        parser.error(f"--rows at least {10 * PAGE_ROWS}; --depth-share between 0 and 1")

    in_scratch_django_database("ftportal_bench_reqlog", lambda: run(args))


if __name__ == "__main__":
    main()
